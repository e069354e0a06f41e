"""A new model version rolls across two replicas behind a real HAProxy (health checks
on /ready) under load, one replica at a time, and no request fails: the same code as
benchmarks/rolling_update_bench.py, on a tiny model and a bounded load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.common.rolling import Outcome, rolling_update, served_timeline
from model_store.repository import list_versions, resolve_store
from model_store.tokenizer import PairTokenizer
from tests.support.tiny_store import tiny_base_dir
from training.data.presets import PRESETS
from training.encoders.base_model import load_base_model
from training.fit.branch import save_branch
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.graph.publish import publish

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, str, str]:
    """A repository serving version `old`, with version `new` (a new sentiment branch)
    published but not current."""
    directory = tmp_path_factory.mktemp("rolling")
    base_dir = tiny_base_dir(directory / "base")
    base = load_base_model(base_dir)
    tokenizer = PairTokenizer.from_dir(base_dir, 32)

    def branch(task: str, seed: int) -> str:
        torch.manual_seed(seed)
        model = TaskModel(base.encoder, preset_spec(task), 1, "cls")
        return str(save_branch(model, base, tokenizer, directory / "branches", {}, {}))

    repository = directory / "repo"
    first = [branch(task, seed) for seed, task in enumerate(PRESETS)]
    publish(repository, first, base_model=base_dir, create=True)
    old = resolve_store(repository).name
    publish(repository, [branch("sentiment", 99)], base_model=base_dir, activate=False)
    (new,) = {v.version for v in list_versions(repository)} - {old}
    return repository, old, new


def run(staged, mode: str, tmp_path: Path) -> Outcome:
    repository, _, new = staged
    copies = [shutil.copytree(repository, tmp_path / name) for name in ("r1", "r2")]
    # The request bound only keeps the load finite: under a busy CPU the roll itself
    # takes longer, and the load must outlast it.
    return rolling_update(copies, new, mode, tmp_path, clients=3, max_requests=50_000, settle_s=1.5)


def sentiment_version(repository: Path, version: str) -> str:
    manifest = resolve_store(repository).parent / version / "manifest.json"
    tasks = json.loads(manifest.read_text())["tasks"]
    return next(t["branch_version"] for t in tasks if t["definition"]["name"] == "sentiment")


@pytest.mark.parametrize("mode", ["restart", "reload"])
def test_a_new_version_rolls_replica_by_replica_without_a_failed_request(
    staged, mode: str, tmp_path: Path
) -> None:
    repository, old, new = staged
    before, after = sentiment_version(repository, old), sentiment_version(repository, new)
    outcome = run(staged, mode, tmp_path)
    # On a failure, HAProxy's log says which health check marked which replica down.
    assert outcome.failures == [], (tmp_path / "haproxy.log").read_text()[-4000:]
    assert len(outcome.records) > 50
    timeline = served_timeline(outcome.records)
    assert {(server, version) for server, version, *_ in timeline} == {
        ("r1", before),
        ("r1", after),
        ("r2", before),
        ("r2", after),
    }
    spans = {(server, version): (first, last) for server, version, _, first, last in timeline}
    for replica in ("r1", "r2"):
        # One replica at a time, and no going back: the old version's last answer comes
        # before the new version's first one.
        assert spans[(replica, before)][1] <= spans[(replica, after)][0]
    # r2 still served the old version after r1 served the new one: a rolling update,
    # not both at once.
    assert spans[("r2", before)][1] > spans[("r1", after)][0]
    # Every replica serves the new version at the end.
    last = {}
    for record in sorted(outcome.records, key=lambda r: r.at):
        last[record.server] = record.version
    assert last == {"r1": after, "r2": after}
