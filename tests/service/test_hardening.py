"""What an attacker or a careless operator does: weak admin tokens, inconsistent or
edited versions, aborted uploads, slow or bloated connections, killed and failing
publishes. Each is refused with a clear answer, and nothing half-done is left behind."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from model_store.atomic import atomic_directory
from model_store.cli import run_cli
from model_store.repository import VERSIONS_DIR, list_versions, resolve_store
from service.app import create_app
from service.settings import Settings
from tests.support.commands import ROOT, assert_one_line_error, run
from tests.support.manifests import rewrite_manifest
from tests.support.servers import start_service
from tests.support.stores import requires_torch

TOKEN = "a" * 16 + "-0123456789abcdef"  # 33 characters


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    return tiny_store


# --- the admin token ----------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "short", " " + "x" * 40])
def test_an_empty_or_weak_admin_token_is_refused_at_start_up(store: Path, token: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--model-dir", str(store)],
        cwd=ROOT,
        env={**os.environ, "BERT_MTS_ADMIN_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result, "setting admin_token", "at least 32 characters")


# --- inconsistent versions ----------------------------------------------------------------

DAMAGE = {
    "wrong output": (lambda raw: raw["tasks"][1].__setitem__("output", "x_logits"), "no output"),
    "task ids": (lambda raw: raw["tasks"][0].__setitem__("task_id", 7), "task ids"),
    "fewer labels": (
        lambda raw: raw["tasks"][0]["definition"].__setitem__("labels", ["a", "b", "c"]),
        "task sentiment is a preset",  # refused before the smoke batch's width check
    ),
    "beyond positions": (lambda raw: raw.__setitem__("max_seq_len", 512), "smoke batch failed"),
    "bad definition": (
        lambda raw: raw["tasks"][2]["definition"].__setitem__("range", [5, 0]),
        "finite low < high",
    ),
}


def _damaged(store: Path, target: Path, damage: str) -> Path:
    shutil.copytree(store, target)
    edit, _ = DAMAGE[damage]
    rewrite_manifest(target, edit)
    return target


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_inconsistent_store_stops_start_up_with_one_line(
    store: Path, tmp_path: Path, damage: str
) -> None:
    damaged = _damaged(store, tmp_path / "store", damage)
    assert_one_line_error(run("-m", "service", "--model-dir", str(damaged)), DAMAGE[damage][1])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("damage", DAMAGE)
async def test_an_inconsistent_version_is_refused_on_reload_and_counted(
    store: Path, tmp_path: Path, damage: str
) -> None:
    repository = tmp_path / "repo"
    (repository / VERSIONS_DIR).mkdir(parents=True)
    shutil.copytree(store, repository / VERSIONS_DIR / "v1")
    _damaged(store, repository / VERSIONS_DIR / "v2", damage)
    (repository / "CURRENT").write_text("v1\n")
    settings = Settings(model_dir=repository, provider="cpu", admin_token=TOKEN)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            (repository / "CURRENT").write_text("v2\n")
            auth = {"Authorization": f"Bearer {TOKEN}"}
            refused = await http.post("/admin/reload", headers=auth)
            assert refused.status_code == 409, refused.text
            assert DAMAGE[damage][1] in refused.json()["detail"]
            metrics = (await http.get("/metrics")).text
            assert 'bert_mts_reloads_total{result="refused"} 1.0' in metrics
            still = await http.post("/similarity", json={"sentence1": "a", "sentence2": "b"})
            assert still.status_code == 200 and still.json()["model_version"]


# --- connections: aborted uploads, slow and bloated clients --------------------------------


def _exchange(url: str, data: bytes, wait_s: float = 0.0, close: bool = False) -> bytes:
    """Send raw bytes; return what the server answers before closing (b"" if nothing)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        if close:
            return b""
        time.sleep(wait_s)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_connection_limits_and_aborted_uploads(store: Path) -> None:
    process, url = start_service(
        store, max_header_bytes="2048", header_timeout_s="1", body_timeout_s="1"
    )
    try:
        bloated = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n"
        assert _exchange(url, bloated).startswith(b"HTTP/1.1 431 ")

        started = time.monotonic()
        assert _exchange(url, b"POST /sentiment HTTP/1.1\r\nHost: x\r\n") == b""
        assert time.monotonic() - started < 5  # closed by the server after about 1 s

        head = b"POST /sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        slow_body = head + b"Content-Length: 100\r\n\r\n" + b'{"text": '
        answer = _exchange(url, slow_body)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"not received within 1 s" in answer

        for _ in range(3):  # the client hangs up in the middle of its upload
            _exchange(url, head + b"Content-Length: 500\r\n\r\n" + b'{"text": "ab', close=True)
        time.sleep(0.5)
        metrics = httpx.get(f"{url}/metrics").text
        aborted = re.search(
            r'bert_mts_requests_total\{endpoint="/sentiment",status="499",task="sentiment"\} (\S+)',
            metrics,
        )
        assert aborted and float(aborted.group(1)) == 3
        assert 'status="500"' not in metrics
        assert httpx.post(f"{url}/sentiment", json={"text": "fine"}).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- publishing: killed midway, disk full ---------------------------------------------------


def test_a_killed_build_leaves_staging_that_the_next_build_removes(tmp_path: Path) -> None:
    builder = textwrap.dedent(
        f"""
        import sys, time
        from model_store.atomic import atomic_directory
        with atomic_directory({str(tmp_path / "versions" / "v1")!r}) as staging:
            (staging / "model.onnx").write_bytes(b"x" * 1000)
            print("staging", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", builder], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "staging"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    left = [p.name for p in (tmp_path / "versions").iterdir()]
    assert len(left) == 1 and left[0].startswith(".v1.tmp-")  # what a kill leaves

    with atomic_directory(tmp_path / "versions" / "v2") as staging:
        (staging / "model.onnx").write_bytes(b"y")
    assert [p.name for p in (tmp_path / "versions").iterdir()] == ["v2"]


def test_a_full_disk_during_publish_is_one_line_and_leaves_nothing(
    store: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    requires_torch()
    from training.graph import merge
    from training.graph.publish import publish

    repository = tmp_path / "repo"
    branches = {p.name: next(p.iterdir()) for p in (store.parent / "branches").iterdir()}
    base = store.parent / "base"
    publish(repository, list(branches.values()), base_model=base, create=True)
    (published,) = list_versions(repository)

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "model.onnx"))

    # A publish into this repository writes its graphs by splicing
    # (training.graph.splice); a splice that fails for its own reasons is built in full,
    # but one that ran out of space is not: a full build needs more room, and would
    # fail too (after a minute, for the 12-layer model).
    full_builds = []
    monkeypatch.setattr(merge, "export_graph", lambda *args, **kw: full_builds.append(args))
    monkeypatch.setattr(merge, "splice_graphs", full_disk)
    capsys.readouterr()

    def publish_sentiment(_argv) -> int:
        publish(repository, [branches["sentiment"]], base_model=base)
        return 0

    code = run_cli(publish_sentiment, None, "store")
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not full_builds
    assert [p.name for p in (repository / VERSIONS_DIR).iterdir()] == [published.version]
    assert resolve_store(repository).name == published.version
