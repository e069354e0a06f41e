"""Every start-up refusal is one line and exit 2, every reload refusal a 409 with a
one-line log; fuzzed manifests and CURRENT files only ever raise StoreError; SIGHUP
during start-up is ignored with a log line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_store import probes
from model_store.manifest import (
    MANIFEST_FILE,
    SELF_HASH_KEY,
    StoreError,
    content_sha256,
    load_manifest,
)
from model_store.repository import CURRENT_FILE, resolve_store
from service.client import Client
from tests.support.commands import assert_one_line_error, run
from tests.support.live_repository import reload
from tests.support.servers import free_port, service_process


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    """The session's tiny store (read-only: the tests copy it to change it)."""
    return tiny_store


def _serve(model_dir: Path) -> subprocess.CompletedProcess[str]:
    return run("-m", "service", "--model-dir", str(model_dir), "--provider", "cpu", "--port", "1")


def test_an_overflowing_number_is_one_line(store, tmp_path) -> None:
    copy = Path(shutil.copytree(store, tmp_path / "copy"))
    path = copy / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["max_seq_len"] = 1
    raw[SELF_HASH_KEY] = content_sha256(raw | {"max_seq_len": float("inf")})
    # json.dumps writes infinity as Infinity; the attack writes 1e999 (also read as inf)
    path.write_text(json.dumps(raw).replace('"max_seq_len": 1', '"max_seq_len": 1e999'))
    assert_one_line_error(_serve(copy), "malformed", "OverflowError")


def test_deeply_nested_json_is_one_line(tmp_path) -> None:
    (tmp_path / MANIFEST_FILE).write_text("[" * 200_000)
    assert_one_line_error(_serve(tmp_path), "nests too deeply")


def test_a_non_utf8_current_is_one_line(repository) -> None:
    (repository / CURRENT_FILE).write_bytes(b"v2026\xff\n")
    assert_one_line_error(_serve(repository), "CURRENT is not a version id")


def test_reload_refusals_are_409_and_one_log_line(repository, live, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="service.reloader")
    with Client(live.url) as client:
        (repository / CURRENT_FILE).write_bytes(b"\xff\xfe")
        refused = reload(client)
        assert refused.status_code == 409 and "not UTF-8" in refused.json()["detail"]
        assert client.ready()
    records = [r for r in caplog.records if r.name == "service.reloader"]
    assert records and all(r.exc_info is None for r in records)
    assert all("\n" not in r.getMessage() for r in records)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_TOP = [
    "name",
    "max_seq_len",
    "num_layers",
    "trunk_layers",
    "input_names",
    "tasks",
    "graphs",
    "files",
    "base_model",
    "probes",
    "variant_metrics",
    "format_version",
]
_TASK = [
    "task_id",
    "definition",
    "output",
    "layers",
    "fork_depth",
    "pooling",
    "validation",
    "branch_version",
]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    where=st.sampled_from(
        [("top", k) for k in _TOP]
        + [("task", k) for k in _TASK]
        + [("probe", k) for k in ("inputs", "outputs")]
    ),
    value=_JSON,
)
def test_fuzzed_manifests_only_raise_store_error(store, where, value) -> None:
    raw = json.loads((store / MANIFEST_FILE).read_text())
    kind, key = where
    if kind == "top":
        raw[key] = value
    elif kind == "task":
        raw["tasks"][0][key] = value
    else:
        raw["probes"]["tasks"]["sentiment"][key] = value
    raw[SELF_HASH_KEY] = content_sha256(raw)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch)
        for name in ("model.onnx", "tokenizer.json"):
            os.symlink(store / name, copy / name)
        (copy / MANIFEST_FILE).write_text(json.dumps(raw))
        try:
            probes._recorded(load_manifest(copy))
        except StoreError as err:
            assert "\n" not in str(err)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=40))
def test_fuzzed_current_files_only_raise_store_error(repository, content) -> None:
    (repository / CURRENT_FILE).write_bytes(content)
    with contextlib.suppress(StoreError):
        resolve_store(repository)


def _catches_sighup(pid: int) -> bool:
    """Whether process `pid` has a handler of its own for SIGHUP (bit 0 of SigCgt in
    /proc/PID/status): a fixed sleep raced the interpreter's start, and a SIGHUP that
    came before the handler was ignored silently where the parent ignores SIGHUP (as a
    detached CI runner may) or ended the process where it does not."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_sighup_during_start_up_is_ignored_with_a_log_line(repository) -> None:
    port = free_port()
    process = service_process(repository, port, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _catches_sighup(process.pid) and time.monotonic() < deadline:
            assert process.poll() is None, "the service ended before it caught SIGHUP"
            time.sleep(0.005)
        with Client(f"http://127.0.0.1:{port}", timeout=5) as client:
            # The start-up handler comes before the slow imports and the model load:
            # nothing listens yet, so this SIGHUP lands during start-up.
            with pytest.raises(httpx.TransportError):
                client.ready()
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            ready = False
            while time.monotonic() < deadline and process.poll() is None and not ready:
                try:
                    ready = client.ready()
                except httpx.TransportError:
                    time.sleep(0.1)
            assert ready, "the service did not survive a SIGHUP during start-up"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "SIGHUP during start-up ignored" in stderr
    assert "Traceback" not in stderr


def test_a_huge_current_file_is_quoted_cut_in_its_one_line(repository: Path) -> None:
    """A 10 MB CURRENT (no such version) is named, not echoed: the line stays short."""
    (repository / CURRENT_FILE).write_text("v" * 10_000_000 + "\n", encoding="utf-8")
    result = run("-m", "service", "--model-dir", str(repository), "--provider", "cpu")
    assert_one_line_error(result, "does not name a version", "(10000000 characters)")
    assert len(result.stderr) < 1000
