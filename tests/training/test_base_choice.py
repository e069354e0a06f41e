"""Which base a training run uses: the store's, else the 12-layer default, and a
contradicting choice refused in one line before anything is trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.manifest import sha256_of
from tests.support.commands import ROOT, assert_one_line_error
from tests.support.tiny_mpnet import tiny_mpnet_dir
from training.commands.base_choice import StoreBase, choose_base, describe_choice
from training.encoders.base_model import read_base_model_spec
from training.errors import UsageError

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def _train(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The brief's command as a user types it, in an environment of this test's making."""
    return subprocess.run(
        [sys.executable, FINETUNE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture
def fresh_machine(tmp_path: Path) -> dict[str, str]:
    """No default repository, no base override, and all-mpnet-base-v2 'installed' as a
    tiny 12-layer MPNet under that name (the real one is 400 MB)."""
    tiny_mpnet_dir(tmp_path / "bases" / "all-mpnet-base-v2", layers=12)
    env = {k: v for k, v in os.environ.items() if k != "BERT_MTS_BASE_MODEL"}
    env["BERT_MTS_BASES_DIR"] = str(tmp_path / "bases")
    env["BERT_MTS_MODELS_DIR"] = str(tmp_path / "models")
    return env


def test_the_briefs_command_trains_every_preset_on_the_12_layer_base(
    fresh_machine: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    result = _train(
        fresh_machine,
        *("--layers", "8", "--limit", "24", "--epochs", "1", "--quiet"),
        *("--data-dir", str(data_dir), "--max-seq-len", "32"),
    )
    assert result.returncode == 0, result.stderr
    branches = tmp_path / "models" / "branches"
    for task in ("sentiment", "paraphrase", "similarity"):
        (version,) = (branches / task).iterdir()
        meta = json.loads((version / "branch.json").read_text())
        assert meta["layers"] == 8 and meta["base_model"]["name"] == "all-mpnet-base-v2"
        assert meta["base_model"]["num_layers"] == 12
    # The run said first which base it took, why, and that it followed no repository.
    start = result.stderr.splitlines()[0]
    assert start.startswith("base model: all-mpnet-base-v2, 12 layers, at "), start
    assert "(the default); following no repository (none at " in start, start


def test_an_explicit_store_that_is_no_repository_is_one_line(tmp_path: Path) -> None:
    result = _train(
        dict(os.environ), "--layers", "1", "--store", str(tmp_path / "model_store/defualt")
    )
    assert_one_line_error(result, "is not a model repository")


def test_a_base_that_contradicts_the_store_is_one_line(repository: Path, tmp_path: Path) -> None:
    other = tiny_mpnet_dir(tmp_path / "other", layers=2)
    result = _train(
        dict(os.environ), "--layers", "1", "--store", str(repository), "--base-model", str(other)
    )
    assert_one_line_error(result, "is not the base of", "--no-store")


def _store_of(spec_path: Path | None, max_seq_len: int = 64) -> StoreBase:
    spec = read_base_model_spec(spec_path)
    return StoreBase(Path("repo"), spec.name, sha256_of(spec.weights_file), max_seq_len)


def test_the_store_decides_the_base_when_none_is_named(tmp_path: Path) -> None:
    chosen, spec = choose_base(None, _store_of(None))
    assert chosen is None and spec.num_layers == 6  # the packaged small base, by its weights
    assert choose_base(Path("all-minilm-l6-v2"), _store_of(None))[1].num_layers == 6
    stranger = tiny_mpnet_dir(tmp_path / "stranger", layers=2)
    with pytest.raises(UsageError, match="is not on this machine"):
        choose_base(None, _store_of(stranger))
    with pytest.raises(UsageError, match="is not the base of"):
        choose_base(stranger, _store_of(None))


def test_the_first_line_names_the_base_and_the_repository_it_follows(tmp_path: Path) -> None:
    store = _store_of(None)
    _, spec = choose_base(None, store)
    line = describe_choice(None, spec, store, store.store)
    assert line.startswith(f"base model: {spec.name}, 6 layers, at {spec.path} ")
    assert line.endswith(f"(the base of {store.store}, whose branches these are)")
    mine = tiny_mpnet_dir(tmp_path / "mine", layers=2)
    line = describe_choice(mine, read_base_model_spec(mine), None, None)
    assert "2 layers" in line and line.endswith(
        "(--base-model); following no repository (--no-store)"
    )
