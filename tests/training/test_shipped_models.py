"""`bert-mts-default-model` over several shipped models: `--model` picks one from the
catalogue (an unknown name is one line naming the known ones, exit 2), `list` shows
what ships, `pack` ships a branch only into the model of its base, and `build
--if-missing` (what `make model` runs) leaves a built repository alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.catalogue import CATALOGUE_FILE, load_catalogue
from model_store.locations import model_repository
from tests.support.commands import ROOT, assert_one_line_error, run

COMMAND = ("-m", "training.commands.default_model")
SHIPPED = ROOT / "models" / "shipped"


def shipped_root(directory: Path, models: dict[str, str], default: str) -> Path:
    """A shipped folder whose catalogue names `models` ({name: base_model}), each with an
    empty branch folder."""
    directory.mkdir(parents=True)
    entries = {
        name: {"description": f"{name} model", "base_model": base} for name, base in models.items()
    }
    (directory / CATALOGUE_FILE).write_text(
        json.dumps({"default": default, "models": entries}), encoding="utf-8"
    )
    for name in models:
        (directory / name).mkdir()
    return directory


@pytest.mark.parametrize(
    "args",
    [
        ["build", "--model", "huge"],
        ["build", "--model", "huge", "--record", "--data-dir", "."],
        ["pack", "--model", "huge", "--embedding"],
        ["dir", "--model", "huge"],
        ["install-base", "--model", "huge"],
    ],
)
def test_an_unknown_model_is_one_line_naming_the_shipped_ones(args: list[str]) -> None:
    catalogue = load_catalogue(SHIPPED)
    result = run(*COMMAND, *args)
    assert_one_line_error(result, "unknown model 'huge'", f"{catalogue.default} (default)")
    for name in catalogue.models:
        assert name in result.stderr


def test_dir_names_each_models_repository() -> None:
    catalogue = load_catalogue(SHIPPED)
    for name in (*catalogue.models, "default"):
        result = run(*COMMAND, "dir", "--model", name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(model_repository(name))
    default = run(*COMMAND, "dir")
    assert default.stdout.strip() == str(model_repository())  # the default model's


def test_list_shows_every_model_with_its_base_tasks_and_depths() -> None:
    result = run(*COMMAND, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    catalogue = load_catalogue(SHIPPED)
    assert len(lines) == len(catalogue.models)
    for line, model in zip(lines, catalogue.models.values(), strict=True):
        assert line.startswith(model.name) and f"base {model.base_model}" in line
        assert ("(default)" in line) == catalogue.is_default(model)
        for meta in model.branches.glob("*/*/branch.json"):
            depth = json.loads(meta.read_text())["layers"]
            assert f"{meta.parent.parent.name} K={depth}" in line
        assert " MB shipped" in line


def test_build_if_missing_leaves_a_built_repository_alone(tmp_path: Path) -> None:
    built = tmp_path / "built"
    built.mkdir()
    (built / "CURRENT").write_text("v1\n")
    result = run(*COMMAND, "build", "--model", "small", "--out", str(built), "--if-missing")
    assert result.returncode == 0 and "built already" in result.stdout
    assert [p.name for p in built.iterdir()] == ["CURRENT"]
    # Something that is not a built repository is never overwritten, with or without.
    other = tmp_path / "other"
    other.mkdir()
    for extra in ([], ["--if-missing"]):
        refused = run(*COMMAND, "build", "--model", "small", "--out", str(other), *extra)
        assert_one_line_error(refused, f"{other} already exists")


def test_data_dir_without_record_is_misuse(tmp_path: Path) -> None:
    result = run(
        *COMMAND, "build", "--model", "small", "--out", str(tmp_path / "x"), "--data-dir", "."
    )
    assert_one_line_error(result, "--data-dir is only read with --record")
    assert not (tmp_path / "x").exists()


def test_pack_ships_a_branch_only_into_the_model_of_its_base(tiny, tmp_path: Path) -> None:
    shipped = shipped_root(
        tmp_path / "shipped", {"small": "all-minilm-l6-v2", "tiny": str(tiny.base_dir)}, "small"
    )
    branch = tiny.make("sentiment", 0)
    refused = run(*COMMAND, "pack", "--shipped", str(shipped), "--branch", str(branch))
    assert_one_line_error(refused, "was trained on", "not on the base of small")
    assert list((shipped / "small").iterdir()) == []

    packed = run(
        *COMMAND, "pack", "--shipped", str(shipped), "--model", "tiny", "--branch", str(branch)
    )
    assert packed.returncode == 0, packed.stderr
    (version,) = (shipped / "tiny" / "sentiment").iterdir()
    assert json.loads((version / "branch.json").read_text())["weights_encoding"] == "int8-rowwise"
    assert "build --model tiny --record --data-dir ../shared/data" in packed.stdout
    listed = run(*COMMAND, "list", "--shipped", str(shipped)).stdout
    assert "tiny: base " in listed and "sentiment K=1" in listed
    assert "small (default): base all-minilm-l6-v2; no branches" in listed


def test_build_says_what_it_builds_before_and_its_size_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first `make serve` builds for minutes: the line before names the model, its
    tasks, its base and the graphs; the line after, the repository and its size."""
    from training.commands import default_model
    from training.graph import default_model as graphs

    def build(shipped, out, *_args):  # what a build leaves: a repository of 3 MB
        (out / "versions").mkdir(parents=True)
        (out / "versions" / "graph.onnx").write_bytes(b"0" * 3_000_000)
        return out, {}

    monkeypatch.setattr(graphs, "build", build)
    out = tmp_path / "small"
    assert default_model.main(["build", "--model", "small", "--out", str(out)]) == 0
    before, after = capsys.readouterr().out.splitlines()
    small = load_catalogue(SHIPPED).resolve("small")
    assert before.startswith("building small (") and f"on base {small.base_model}" in before
    assert f"{', '.join(small.variants)} ONNX graphs" in before and str(out) in before
    assert after == f"built and verified {out} (3 MB)"
