"""Disk use of a repository is bounded: identical files of versions are hard links,
and `prune --keep N` removes old versions but never the current one or one that a
running service serves (its lease), so that service can go on and roll back."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

from model_store.leases import LEASES_DIR, leased_versions
from model_store.manifest import load_manifest
from model_store.repository import (
    BRANCHES_DIR,
    VERSIONS_DIR,
    list_versions,
    resolve_store,
    set_current,
)
from service.client import Client
from tests.support.commands import run
from tests.support.live_repository import probe, reload
from tests.support.servers import ThreadedServer
from tests.support.tiny_store import TinyBranches
from training.commands import store as store_cli


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
    result = run("-m", "model_store", "prune", "--store", str(repository), "--keep", "0")
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


def test_publish_keeps_the_last_n_when_asked(
    tiny: TinyBranches, repository: Path, monkeypatch
) -> None:
    for seed in (41, 42):
        tiny.publish(repository, tiny.make("sentiment", seed))
    monkeypatch.setenv(store_cli.KEEP_ENV, "2")  # read by the publish command
    branch = tiny.make("sentiment", 43)
    args = ["publish", "--store", str(repository), "--base-model", str(tiny.base_dir)]
    assert store_cli.main([*args, "--branch", str(branch)]) == 0
    assert len(versions(repository)) == 2
    assert versions(repository)[-1] == resolve_store(repository).name


def test_a_prune_during_a_publish_waits_for_it(
    tiny: TinyBranches, repository: Path, monkeypatch
) -> None:
    """`prune --keep 0` started while a publish has written its new version but not yet
    made it current: the prune waits for the repository lock, so it removes neither the
    new version nor the one current when it started; after both, the new one serves."""
    from training.graph import publish as publish_module

    linked = publish_module.link_identical_files
    in_window = threading.Event()

    def slow_link(directory: Path) -> int:
        in_window.set()
        time.sleep(0.5)  # the new version exists, CURRENT still names the old one
        return linked(directory)

    monkeypatch.setattr(publish_module, "link_identical_files", slow_link)
    published: list[str] = []
    writer = threading.Thread(
        target=lambda: published.append(tiny.publish(repository, tiny.make("sentiment", 21)))
    )
    writer.start()
    assert in_window.wait(timeout=120)
    assert store_cli.main(["prune", "--store", str(repository), "--keep", "0"]) == 0
    writer.join()
    assert published and versions(repository) == published
    assert resolve_store(repository).name == published[0]
    load_manifest(resolve_store(repository))  # whole: every hash verified


def test_the_next_publish_removes_what_a_killed_publish_left(
    tiny: TinyBranches, repository: Path, tmp_path: Path
) -> None:
    """A publish killed after copying its branch into `branches/` (SIGKILL: no cleanup)
    leaves a copy no version uses; the next publish, of another task, removes it, and
    the branches of versions pruned since, but keeps every branch a version uses."""
    killed = tiny.make("sentiment", 41)
    orphan = repository / BRANCHES_DIR / "sentiment" / killed.name
    shutil.copytree(killed, orphan)  # what keep_branch had copied when the kill came
    used_before = {
        (t.name, t.branch_version) for t in load_manifest(resolve_store(repository)).tasks
    }
    tiny.publish(repository, tiny.make("paraphrase", 42))
    assert not orphan.exists()
    kept = {
        (task.name, version.name)
        for task in (repository / BRANCHES_DIR).iterdir()
        for version in task.iterdir()
    }
    current = {(t.name, t.branch_version) for t in load_manifest(resolve_store(repository)).tasks}
    assert current <= kept and used_before <= kept  # the previous version still uses its own
