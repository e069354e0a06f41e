"""Publishing into one repository is serialised (no lost update), and a refused publish
leaves nothing behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.locking import LOCK_FILE
from model_store.manifest import load_manifest
from model_store.repository import BRANCHES_DIR, list_versions, resolve_store
from tests.support.commands import ROOT
from training.commands import store as store_cli
from training.errors import MergeError, UsageError
from training.fit.branch import read_branch_info
from training.graph import merge


def _served(repository: Path) -> dict[str, str]:
    return {t.name: t.branch_version for t in load_manifest(resolve_store(repository)).tasks}


def test_two_publishes_at_once_keep_both_updates(tiny, repository: Path) -> None:
    before = _served(repository)
    sentiment, paraphrase = tiny.make("sentiment", 50), tiny.make("paraphrase", 51)
    commands = [
        [
            sys.executable,
            "-m",
            "training.commands.store",
            "publish",
            "--store",
            str(repository),
            "--base-model",
            str(tiny.base_dir),
            "--branch",
            str(branch),
        ]
        for branch in (sentiment, paraphrase)
    ]
    processes = [
        subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    after = _served(repository)
    assert after["sentiment"] == read_branch_info(sentiment).version
    assert after["paraphrase"] == read_branch_info(paraphrase).version
    assert after["similarity"] == before["similarity"]
    assert len(list_versions(repository)) == 3
    assert (repository / LOCK_FILE).is_file()
    assert LOCK_FILE not in {v.version for v in list_versions(repository)}


def test_a_refused_publish_leaves_no_branch_copy(tiny, repository, monkeypatch) -> None:
    branch = tiny.make("similarity", 52)
    version = read_branch_info(branch).version
    kept = repository / BRANCHES_DIR / "similarity" / version
    real = merge.publish_store

    def refuse(*args, **kwargs):
        raise MergeError("refused for the test")

    monkeypatch.setattr(merge, "publish_store", refuse)
    args = ["publish", "--store", str(repository), "--base-model", str(tiny.base_dir)]
    with pytest.raises(MergeError):
        store_cli.main([*args, "--branch", str(branch)])
    assert not kept.exists()
    assert (repository / BRANCHES_DIR / "similarity").is_dir()  # the older version stays
    monkeypatch.setattr(merge, "publish_store", real)
    assert store_cli.main([*args, "--branch", str(branch)]) == 0  # the corrected republish
    assert kept.is_dir() and _served(repository)["similarity"] == version


def test_a_stale_copy_under_the_same_version_is_replaced(tiny, repository) -> None:
    """A killed publish can leave a copy of another branch under the new one's version;
    publishing the new branch must use its own files, not that copy."""
    branch = tiny.make("paraphrase", 53)
    kept = repository / BRANCHES_DIR / "paraphrase" / read_branch_info(branch).version
    shutil.copytree(branch, kept)
    (kept / "branch.safetensors").write_bytes(b"left by a killed publish")
    args = ["publish", "--store", str(repository), "--base-model", str(tiny.base_dir)]
    assert store_cli.main([*args, "--branch", str(branch)]) == 0
    assert (kept / "branch.safetensors").read_bytes() == (
        branch / "branch.safetensors"
    ).read_bytes()
    (kept / "branch.json").write_text("{}")  # now a published version was merged from it
    with pytest.raises(UsageError, match="already published as paraphrase"):
        store_cli.main([*args, "--branch", str(branch)])
