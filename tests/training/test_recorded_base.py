"""Commands default to the base a store or branch records, not to the packaged small base.

A user's branch for the 12-layer default model was refused by `bert-mts-store publish
--store models/default --branch ...` ("pass the matching --base-model"), and with the
default variants (int8) the publish would have dropped the repository's fp16 graph. Here
the 12-layer base is stood in for by a tiny MPNet installed under its name
(`$BERT_MTS_BASES_DIR`, as `bert-mts-bases install` lays it out).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.manifest import load_manifest
from model_store.repository import BRANCHES_DIR, resolve_store
from tests.support.commands import assert_one_line_error, run
from tests.support.tiny_mpnet import tiny_mpnet_dir
from training.errors import BaseModelError

torch = pytest.importorskip("torch")

NAMED_BASE = "all-mpnet-base-v2"


def _branch(base_dir: Path, out: Path, task: str, seed: int, record_data: bool = True) -> Path:
    """A random K = 1 branch of a preset that records a small labelled file as its data
    (columns a, b, label), or records none."""
    from model_store.tokenizer import PairTokenizer
    from training.data.examples import Columns
    from training.data.source import DataSource
    from training.encoders.base_model import load_base_model
    from training.fit.branch import save_branch
    from training.fit.objectives import preset_spec
    from training.fit.task_model import TaskModel

    base = load_base_model(base_dir)
    torch.manual_seed(seed)
    model = TaskModel(base.encoder, preset_spec(task), 1, "mean")
    data = out.parent / f"{task}.tsv"
    data.write_text("a\tb\tlabel\na fine film\tit was fine\t4\na dull film\tdull\t0\n")
    columns = Columns("a", "b" if model.spec.pair else None, "label")
    recorded = {"data": DataSource(data, columns, None, False).to_json()} if record_data else {}
    tokenizer = PairTokenizer.from_dir(base_dir, 32)
    return save_branch(model, base, tokenizer, out, {}, recorded)


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> dict[str, Path]:
    """A tiny base installed as all-mpnet-base-v2, two branches on it, and a repository
    of the first published with fp16 only besides fp32."""
    from training.graph.publish import publish

    root = tmp_path_factory.mktemp("recorded-base")
    base_dir = tiny_mpnet_dir(root / "bases" / NAMED_BASE, layers=2)
    sentiment = _branch(base_dir, root / "trained", "sentiment", 0)
    similarity = _branch(base_dir, root / "trained", "similarity", 1)
    # A base known by no name here (a user's own checkpoint directory).
    stranger_dir = tiny_mpnet_dir(root / "elsewhere" / "my-bert", layers=2, seed=5)
    stranger = _branch(stranger_dir, root / "trained-elsewhere", "sentiment", 2)
    repository = root / "repository"
    publish(repository, [sentiment], base_model=base_dir, variants=("fp16",), create=True)
    return {
        "root": root,
        "bases": root / "bases",
        "repository": repository,
        "sentiment": sentiment,
        "similarity": similarity,
        "stranger": stranger,
    }


def test_publish_takes_the_repositorys_base_and_variants(named, monkeypatch) -> None:
    from training.graph.publish import publish

    monkeypatch.setenv("BERT_MTS_BASES_DIR", str(named["bases"]))
    before = load_manifest(resolve_store(named["repository"]))
    published = publish(named["repository"], [named["similarity"]])  # no base, no variants
    after = published.manifest
    assert after.base_model["sha256"] == before.base_model["sha256"]
    assert set(after.graphs) == set(before.graphs) == {"fp32", "fp16"}
    assert [task.name for task in after.tasks] == ["sentiment", "similarity"]


def test_a_new_repository_takes_the_branches_base(named, monkeypatch) -> None:
    from training.graph.publish import publish

    monkeypatch.setenv("BERT_MTS_BASES_DIR", str(named["bases"]))
    target = named["root"] / "new"
    published = publish(target, [named["sentiment"]], create=True)
    recorded = json.loads((named["sentiment"] / "branch.json").read_text())["base_model"]
    assert published.manifest.base_model["sha256"] == recorded["sha256"]
    assert set(published.manifest.graphs) == {"fp32", "int8"}  # a new repository's default


def test_a_base_not_on_this_machine_is_refused_before_anything_is_copied(
    named, monkeypatch
) -> None:
    from training.graph.publish import publish

    monkeypatch.setenv("BERT_MTS_BASES_DIR", str(named["bases"]))
    target = named["root"] / "refused"
    with pytest.raises(BaseModelError, match="is not on this machine: pass its checkpoint"):
        publish(target, [named["stranger"]], create=True)
    assert not (target / BRANCHES_DIR).exists()


def test_evaluate_scores_a_branch_on_its_own_base_by_default(named, monkeypatch) -> None:
    """The command a user runs on a branch of the default model, with no --base-model."""
    monkeypatch.setenv("BERT_MTS_BASES_DIR", str(named["bases"]))
    data = str(named["root"] / "sentiment.tsv")
    command = ("-m", "training.commands.evaluate", "--data", data, "--branch")
    result = run(*command, str(named["sentiment"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 2
    assert_one_line_error(run(*command, str(named["stranger"])), "is not on this machine")


def test_evaluate_reads_a_given_file_of_a_branch_that_records_no_data(named, monkeypatch):
    """--data FILE with the user-file columns (text, label): nothing recorded is needed."""
    monkeypatch.setenv("BERT_MTS_BASES_DIR", str(named["bases"]))
    bare = _branch(
        named["bases"] / NAMED_BASE, named["root"] / "bare", "sentiment", 3, record_data=False
    )
    data = named["root"] / "user.tsv"
    data.write_text("text\tlabel\na fine film\t4\na dull film\t0\nmeh\t2\n")
    result = run("-m", "training.commands.evaluate", "--branch", str(bare), "--data", str(data))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["examples"] == 3 and report["data"] == str(data)
    without = run("-m", "training.commands.evaluate", "--branch", str(bare))
    assert_one_line_error(without, "does not record its training data: pass --data FILE")
