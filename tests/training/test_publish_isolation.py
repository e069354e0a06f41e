"""Publishing one task into a shipped model never changes another task's answers, on
any graph the service may serve, the graph `--graph auto` picks included.

Each shipped model is built as `make model` builds it, then every one of its tasks is
republished into it in turn, as the README's publish command does: each trained task
as an identical branch under a new version (the case that once flipped `small` from
int8 to fp32 and moved paraphrase's answers), the embedding task with `--embedding`.
After each publish, every other task's raw outputs on a fixed batch (each task's probe
inputs, all tasks asked at once) are compared byte for byte with the version before,
through every graph variant the version has, and the graph auto serves on a CPU and on
CUDA is the same. One publish runs from another working directory: where the task
recorded its data by a relative path, it is refused in one line without `--data-dir`
(the data is not found from there) and changes nothing; with it, it publishes.

The 12-layer `base` needs its base checkpoint (a 400 MB first-use install from the
package registry, as `make serve` does) and publishes in full (about a minute each).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_store import probes
from model_store.catalogue import load_catalogue
from model_store.graph_choice import choose_graph
from model_store.manifest import Manifest, load_manifest
from model_store.repository import BRANCHES_DIR, resolve_store
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tokenizer import PairTokenizer
from tests.support.commands import ROOT, assert_one_line_error

SHIPPED = ROOT / "models" / "shipped"
DATA_DIR = ROOT.parent / "shared" / "data"
MODELS = tuple(load_catalogue(SHIPPED).models)


def command(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(scope="module", params=MODELS)
def shipped_repository(request, tmp_path_factory) -> Path:
    """The shipped model, built as `make model MODEL=NAME` builds it."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"{DATA_DIR} is absent: the publishes measure on its validation rows")
    out = tmp_path_factory.mktemp(request.param) / "repo"
    built = command(
        "-m", "training.commands.default_model", "build", "--model", request.param,
        "--out", str(out),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def answers(manifest: Manifest) -> dict[str, dict[str, bytes]]:
    """{variant: {task: raw output bytes}} on every task's probe inputs, all tasks asked."""
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    names = [task.name for task in manifest.tasks]
    inputs = {t.name: probes.default_inputs(t.definition.pair) for t in manifest.tasks}
    batch = probes.build_batch(tokenizer, [(i, inputs[name]) for i, name in enumerate(names)])
    mask = task_mask(batch.task_sets, len(names))
    result = {}
    for variant in manifest.graphs:
        outputs = MultiTaskSession(manifest, variant, providers=[CPU]).run(batch.batch, mask)
        result[variant] = {name: np.ascontiguousarray(outputs[name]).tobytes() for name in names}
    return result


def auto_choices(manifest: Manifest) -> tuple[str, str]:
    return tuple(choose_graph(manifest, cuda).variant for cuda in (False, True))


def renamed_copy(branch: Path, destination: Path) -> Path:
    """The same weights under a new (later) version id: only branch.json's version and
    its directory's name differ."""
    target = destination / branch.parent.name / f"29991231T000000Z-{branch.name[-8:]}"
    shutil.copytree(branch, target)
    meta_path = target / "branch.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["version"] = target.name
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return target


def publish(repository: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`bert-mts-store publish`, accepting the graph choice where this CPU's figures for
    the republished task would switch it (the refusal is checked, then `keep` given):
    the answers compared below are those of the graph the repository keeps serving."""
    base = ("-m", "training.commands.store", "publish", "--store", str(repository), *args)
    result = command(*base, cwd=cwd)
    if result.returncode == 2 and "--graph-choice keep" in result.stderr:
        assert_one_line_error(result, "would switch the graph served")
        result = command(*base, "--graph-choice", "keep", cwd=cwd)
    return result


def test_publishing_each_task_leaves_every_other_tasks_answers_byte_identical(
    shipped_repository: Path, tmp_path: Path
) -> None:
    repository = shipped_repository
    tasks = [task.name for task in load_manifest(resolve_store(repository)).tasks]
    assert len(tasks) >= 3
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for index, task in enumerate(tasks):
        before = load_manifest(resolve_store(repository))
        entry = next(t for t in before.tasks if t.name == task)
        if entry.kind == "embedding":
            args: tuple[str, ...] = ("--embedding",)
        else:
            kept = repository / BRANCHES_DIR / task / entry.branch_version
            args = ("--branch", str(renamed_copy(kept, tmp_path / "branches")))
        recorded = (entry.validation.get("split") or {}).get("data") or {}
        found = (elsewhere / recorded.get("path", "")).is_file()  # an absolute path: anywhere
        if index == 1 and not found:  # from another working directory: no data from there
            refused = publish(repository, *args, cwd=elsewhere)
            assert_one_line_error(refused, "pass --data-dir")
            assert resolve_store(repository) == before.directory  # nothing changed
        if index != 1 or not found:  # the shipped `base` records its data by absolute paths
            args = (*args, "--data-dir", str(DATA_DIR))
        result = publish(repository, *args, cwd=elsewhere if index == 1 else ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        after = load_manifest(resolve_store(repository))
        assert after.directory != before.directory
        if entry.kind != "embedding":  # the republished task is the renamed branch
            assert next(t for t in after.tasks if t.name == task).branch_version.startswith("2999")
        assert set(after.graphs) == set(before.graphs)
        assert auto_choices(after) == auto_choices(before), (task, json.dumps(after.extra))
        old, new = answers(before), answers(after)
        for variant in before.graphs:
            for other in tasks:
                if other != task:
                    assert new[variant][other] == old[variant][other], (task, variant, other)
