"""Disk use of a repository is bounded: identical files of versions are hard links,
and `prune --keep N` removes old versions but never the current one or one that a
running service serves (its lease), so that service can go on and roll back."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from model_store.leases import LEASES_DIR, ServingLease, leased_versions
from model_store.manifest import load_manifest
from model_store.repository import VERSIONS_DIR, list_versions, resolve_store, set_current
from service.client import Client
from training import store as store_cli

from .commands import assert_one_line_error, run
from .live_repository import probe, reload
from .servers import ThreadedServer
from .tiny_store import TinyBranches


def versions(repository: Path) -> list[str]:
    return [v.version for v in list_versions(repository)]


def test_a_republished_version_shares_every_identical_file(tiny: TinyBranches, tmp_path) -> None:
    repository = tmp_path / "repo"
    branches = [tiny.make("sentiment", 1), tiny.make("similarity", 2)]
    first = tiny.publish(repository, *branches)
    second = tiny.publish(repository, *branches)  # same branches: the same bytes
    old, new = (repository / VERSIONS_DIR / v for v in (first, second))
    manifest = load_manifest(new)  # verifies every hash: reads through the links
    for name in manifest.files:
        assert os.path.samefile(old / name, new / name), name
    # A new task changes the graphs but not the tokenizer.
    third = tiny.publish(repository, tiny.make("paraphrase", 3))
    latest = repository / VERSIONS_DIR / third
    assert os.path.samefile(latest / "tokenizer.json", old / "tokenizer.json")
    assert not os.path.samefile(latest / "model.onnx", old / "model.onnx")


def test_prune_keeps_current_and_the_newest(tiny: TinyBranches, repository: Path) -> None:
    first = resolve_store(repository).name
    for seed in (11, 12, 13):
        tiny.publish(repository, tiny.make("sentiment", seed))
    *middle, newest = versions(repository)[1:]
    set_current(repository, first)  # rolled back: the current one is the oldest
    assert store_cli.main(["prune", "--store", str(repository), "--keep", "1"]) == 0
    assert versions(repository) == [first, newest]
    assert resolve_store(repository).name == first
    assert not any(p.name.startswith(".") for p in (repository / VERSIONS_DIR).iterdir())
    assert store_cli.main(["prune", "--store", str(repository), "--keep", "0"]) == 0
    assert versions(repository) == [first]
    assert middle  # two versions were removed by the first prune


def test_a_served_version_is_never_pruned(
    tiny: TinyBranches, repository: Path, live: ThreadedServer
) -> None:
    served = resolve_store(repository).name
    assert leased_versions(repository) == {served: [f"{socket.gethostname()}-{os.getpid()}.json"]}
    newer = tiny.publish(repository, tiny.make("sentiment", 21))
    tiny.publish(repository, tiny.make("sentiment", 22))
    set_current(repository, newer)  # current moved on; the service has not reloaded yet
    result = run("-m", "training.store", "prune", "--store", str(repository), "--keep", "0")
    assert result.returncode == 0, result.stderr
    assert versions(repository) == [served, newer]
    assert f"kept {served}: served (lease" in result.stdout
    with Client(live.url) as client:
        assert probe(client)["sentiment"]["model_version"]  # still answers from it
        assert reload(client).json()["result"] == "loaded"
    assert leased_versions(repository) == {newer: [f"{socket.gethostname()}-{os.getpid()}.json"]}
    live.stop()
    assert leased_versions(repository) == {}
    assert not list((repository / LEASES_DIR).iterdir())


def test_a_dead_process_lease_is_ignored(tiny: TinyBranches, repository: Path) -> None:
    old = resolve_store(repository).name
    tiny.publish(repository, tiny.make("sentiment", 31))
    dead = 2**22 + 12345  # above the default pid_max: no such process
    leases = repository / LEASES_DIR
    leases.mkdir()
    record = {"version": old, "host": socket.gethostname(), "pid": dead, "since": "x"}
    (leases / f"{socket.gethostname()}-{dead}.json").write_text(json.dumps(record))
    elsewhere = {**record, "host": "another-host", "pid": 1}
    (leases / "another-host-1.json").write_text(json.dumps(elsewhere))
    assert leased_versions(repository) == {old: ["another-host-1.json"]}
    (leases / "another-host-1.json").unlink()
    assert leased_versions(repository) == {}


def test_publish_keeps_the_last_n_when_asked(
    tiny: TinyBranches, repository: Path, monkeypatch
) -> None:
    for seed in (41, 42):
        tiny.publish(repository, tiny.make("sentiment", seed))
    monkeypatch.setenv(store_cli.KEEP_ENV, "2")
    newest = tiny.publish(repository, tiny.make("sentiment", 43))
    assert len(versions(repository)) == 2 and versions(repository)[-1] == newest


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--keep", "-1"], "is not a count"),
        (["--keep", "two"], "is not a count"),
        ([], "--keep"),
    ],
)
def test_prune_misuse_is_one_line(repository: Path, args, fragment) -> None:
    result = run("-m", "training.store", "prune", "--store", str(repository), *args)
    assert_one_line_error(result, fragment)


def test_prune_of_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    result = run("-m", "training.store", "prune", "--store", str(tmp_path), "--keep", "1")
    assert_one_line_error(result, "not a model repository")


def test_a_repository_where_no_lease_can_be_written_still_serves(repository: Path, caplog) -> None:
    (repository / LEASES_DIR).write_text("not a directory")  # as a read-only volume would
    lease = ServingLease(repository)
    lease.hold(resolve_store(repository))  # warns, does not raise
    assert "cannot write the serving lease" in caplog.text
    lease.hold(resolve_store(repository))
    assert caplog.text.count("cannot write the serving lease") == 1
    lease.release()
