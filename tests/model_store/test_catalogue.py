"""The shipped models' catalogue: the repository's own is complete, names resolve to
their model and repository directory, and every malformed catalogue or unknown name is
one readable error (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.catalogue import CATALOGUE_FILE, CatalogueError, load_catalogue
from model_store.locations import MODELS_ENV, default_store, model_repository
from tests.support.commands import ROOT

SHIPPED = ROOT / "models" / "shipped"


def write_catalogue(shipped: Path, raw: object) -> Path:
    shipped.mkdir(parents=True, exist_ok=True)
    text = raw if isinstance(raw, str) else json.dumps(raw)
    (shipped / CATALOGUE_FILE).write_text(text, encoding="utf-8")
    return shipped


TWO_MODELS = {
    "default": "base",
    "models": {
        "base": {"description": "12 layers", "base_model": "all-mpnet-base-v2"},
        "small": {"description": "6 layers", "base_model": "all-minilm-l6-v2"},
    },
}


def test_the_shipped_catalogue_names_complete_models() -> None:
    """Every model the repository's catalogue names has its branches, checksums and
    recorded metrics, and its sweep file where it names one."""
    catalogue = load_catalogue(SHIPPED)
    assert catalogue.default in catalogue.models and "small" in catalogue.models
    for model in catalogue.models.values():
        assert model.branches == SHIPPED / model.name
        assert (model.branches / "SHA256SUMS").is_file()
        assert (model.branches / "variant_metrics.json").is_file()
        assert list(model.branches.glob("*/*/branch.json")), model.name
        assert model.sweep is None or (ROOT / model.sweep).is_file()
    assert catalogue.models["small"].base_model == "all-minilm-l6-v2"


def test_names_resolve_to_models_and_repositories(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "models"))
    shipped = write_catalogue(tmp_path / "models" / "shipped", TWO_MODELS)
    catalogue = load_catalogue(shipped)
    assert catalogue.resolve().name == catalogue.resolve("default").name == "base"
    assert catalogue.resolve("small").base_model == "all-minilm-l6-v2"
    # The default builds into models/default, any other model into models/<name>.
    assert model_repository("base") == model_repository() == default_store()
    assert model_repository("default") == tmp_path / "models" / "default"
    assert model_repository("small") == tmp_path / "models" / "small"
    # Flipping the default flips the directories.
    write_catalogue(shipped, {**TWO_MODELS, "default": "small"})
    assert model_repository("small") == tmp_path / "models" / "default"
    assert model_repository("base") == tmp_path / "models" / "base"


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path, TWO_MODELS))
    with pytest.raises(CatalogueError) as caught:
        catalogue.resolve("large")
    message = str(caught.value)
    assert "'large'" in message and "base (default), small" in message
    assert "\n" not in message
    with pytest.raises(CatalogueError, match="unknown model 'large'"):
        model_repository("large", shipped=tmp_path)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "unreadable"),
        ({"default": "small"}, '"models"'),
        ({"default": "big", "models": TWO_MODELS["models"]}, "'big'"),
        ({"default": "shipped", "models": {"shipped": {"base_model": "x"}}}, "'shipped'"),
        ({"default": "Big", "models": {"Big": {"base_model": "x"}}}, "lower-case"),
        ({"default": "small", "models": {"small": {"description": "no base"}}}, "base_model"),
    ],
)
def test_a_malformed_catalogue_is_one_line(tmp_path: Path, raw: object, fragment: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(write_catalogue(tmp_path, raw))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_catalogue_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="is missing"):
        load_catalogue(tmp_path)


def test_a_model_may_leave_graph_variants_out_but_never_fp32(tmp_path: Path) -> None:
    raw = json.loads(json.dumps(TWO_MODELS))
    raw["models"]["base"]["variants"] = ["fp16", "fp32"]
    catalogue = load_catalogue(write_catalogue(tmp_path / "ok", raw))
    assert catalogue.models["base"].variants == ("fp32", "fp16")  # in the canonical order
    assert catalogue.models["small"].variants == ("fp32", "int8", "fp16")
    for bad in (["int8", "fp16"], ["fp32", "fp32"], ["fp32", "bf16"], "fp32"):
        raw["models"]["base"]["variants"] = bad
        with pytest.raises(CatalogueError, match="variants must list fp32"):
            load_catalogue(write_catalogue(tmp_path / f"bad{len(str(bad))}", raw))
