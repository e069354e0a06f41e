"""The shipped default model: it is rebuilt from the committed branches exactly (by
hash), it answers all three tasks sensibly, it meets the accuracy bar on the seeded
validation splits, and a tampered or unreproducible build is refused, leaving nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model_store.catalogue import CATALOGUE_FILE, load_catalogue
from model_store.graph_choice import (
    COMPARISONS,
    DEFAULT_TOLERANCE_POINTS,
    losses,
    paired_tests,
    significant_loss,
)
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from service.app import create_app
from service.engine import Engine
from service.settings import Settings
from tests.support.commands import ROOT, assert_one_line_error, run
from training.data.presets import PRESETS
from training.evaluate.store import evaluate_store
from training.fit.branch import BRANCH_WEIGHTS, load_branch, resolve_branch_dir, save_branch
from training.fit.objectives import overall_score, preset_spec
from training.fit.task_model import TaskModel
from training.fit.weight_codec import INT8_ROWWISE, decode_weights, encode_int8_rowwise
from training.graph.default_model import (
    CHECKSUMS,
    VARIANT_METRICS,
    ChecksumError,
    build,
    pack_branch,
)

SHARED_DATA = ROOT.parent / "shared" / "data"
SHIPPED_ROOT = ROOT / "models" / "shipped"
# The 6-layer model: every test here builds it (the 12-layer one needs its 400 MB base).
SMALL = load_catalogue(SHIPPED_ROOT).resolve("small")
SHIPPED_DIR = SMALL.branches


def copy_small(shipped: Path) -> Path:
    """A shipped folder holding the catalogue and the small model only; its model dir."""
    shipped.mkdir()
    shutil.copy(SHIPPED_ROOT / CATALOGUE_FILE, shipped / CATALOGUE_FILE)
    shutil.copytree(SHIPPED_DIR, shipped / SMALL.name)
    return shipped / SMALL.name


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("default") / "default"
    path, files = build(SHIPPED_DIR, out, base_model=SMALL.base_model)
    assert path == out and len(files) == 4
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_shipped_model_answers_all_three_tasks_sensibly(built: Path) -> None:
    settings = Settings(model_dir=built, provider="cpu")
    app = create_app(settings, Engine.load(settings.model_dir, settings.engine_config()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def results(path: str, body: dict) -> list[dict]:
                response = await http.post(path, json=body)
                assert response.status_code == 200, response.text
                return response.json()["results"]

            good, bad = await results(
                "/sentiment",
                {
                    "texts": [
                        "A moving, funny and beautifully acted film: a masterpiece.",
                        "A dull, tedious and utterly pointless waste of two hours.",
                    ]
                },
            )
            question = "How do I learn to cook rice?"
            same, other = await results(
                "/paraphrase",
                {
                    "pairs": [
                        [question, "How can I learn to cook rice?"],
                        [question, "What is the capital of Canada?"],
                    ]
                },
            )
            guitar = "A man is playing a guitar."
            close, far = await results(
                "/similarity",
                {
                    "pairs": [
                        [guitar, "A man plays the guitar."],
                        [guitar, "The stock market fell."],
                    ]
                },
            )
    assert good["label"] >= 3 and bad["label"] <= 1
    assert same["is_paraphrase"] and not other["is_paraphrase"]
    assert close["score"] > 3.5 and far["score"] < 1.5


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_shipped_model_meets_the_accuracy_bar(built: Path) -> None:
    """The issue's bar for the shipped model: validation overall score >= 0.75."""
    manifest = load_manifest(resolve_store(built))
    report = evaluate_store(manifest, SHARED_DATA, ["fp32"])
    overall = overall_score({task: report[task]["fp32"] for task in PRESETS})
    assert overall >= 0.75, report


def test_build_copies_the_recorded_variant_metrics_and_auto_follows_them(built: Path) -> None:
    """The build needs no data: the metrics and paired tests recorded with the checksums
    are in the manifest, and `--graph auto` on a CPU weighs int8 against fp32 on them:
    int8 when no task loses significantly (at 5%) nor more than the tolerance, fp32
    otherwise, and the reason names the test that decided. Raising the tolerance past
    the largest loss turns int8 on unless some loss is significant."""
    manifest = load_manifest(resolve_store(built))
    recorded = json.loads((SHIPPED_DIR / VARIANT_METRICS).read_text())
    assert manifest.extra["variant_metrics"]["tasks"] == recorded["tasks"]
    assert manifest.extra["variant_metrics"][COMPARISONS] == recorded[COMPARISONS]
    assert set(recorded["tasks"]) == set(PRESETS)
    assert all({"fp32", "int8", "fp16"} <= set(t) for t in recorded["tasks"].values())
    assert all({"int8", "fp16"} <= set(t) for t in recorded[COMPARISONS].values())
    assert manifest.extra["fusion"]["complete"]
    lost = losses(manifest, "int8")
    tests = paired_tests(manifest, "int8")
    assert tests is not None
    significant = {task for task, test in tests.items() if significant_loss(test)}
    too_much = {task for task in lost if lost[task] > DEFAULT_TOLERANCE_POINTS}
    engine = Engine.load(built, Settings(model_dir=built, provider="cpu").engine_config())
    assert engine.variant == ("fp32" if significant | too_much else "int8")
    # fp32: the reason names every task that failed; int8: the task that lost most.
    for task in significant | too_much or {max(lost, key=lost.get)}:
        assert task in engine.graph_reason
    assert "McNemar" in engine.graph_reason or "bootstrap" in engine.graph_reason
    worst = max(lost.values())
    lenient = Settings(model_dir=built, provider="cpu", graph_tolerance_points=worst + 0.01)
    served = Engine.load(built, lenient.engine_config()).variant
    assert served == ("fp32" if significant else "int8")


def test_shipped_tasks_share_at_least_two_frozen_layers(built: Path) -> None:
    """Issue #13's bar for a shipped model: its branches are shallow enough (K <= 4 of
    6) that every task runs the same bottom two layers, held once in the graph."""
    manifest = load_manifest(resolve_store(built))
    assert manifest.trunk_layers >= 2, [(t.name, t.layers) for t in manifest.tasks]


def test_tampered_shipped_branch_is_refused(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    weights = resolve_branch_dir(copy_small(shipped) / "similarity") / BRANCH_WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    out = tmp_path / "default"
    result = run(
        "-m",
        "training.commands.default_model",
        "build",
        "--model",
        SMALL.name,
        "--shipped",
        str(shipped),
        "--out",
        str(out),
    )
    assert_one_line_error(result, "corrupt branch")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["shipped"]


def test_build_that_does_not_reproduce_the_checksums_is_refused(tmp_path: Path) -> None:
    shipped = copy_small(tmp_path / "shipped")
    sums = shipped / CHECKSUMS
    lines = sums.read_text().splitlines()
    lines[0] = "0" * 64 + lines[0][64:]
    sums.write_text("\n".join(lines) + "\n")
    with pytest.raises(ChecksumError, match="does not reproduce the released model"):
        build(shipped, tmp_path / "default", base_model=SMALL.base_model)
    assert [p.name for p in tmp_path.iterdir()] == ["shipped"]


def test_pack_stores_int8_weights_and_replaces_the_previous_version(
    base, tokenizer, tmp_path: Path
) -> None:
    shipped = tmp_path / "shipped"
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = TaskModel(base.encoder, preset_spec("sentiment"), 1, "mean")
        models.append(model)
        trained = save_branch(model, base, tokenizer, tmp_path / "runs", {}, {})
        packed = pack_branch(trained, shipped)
    assert [p.name for p in (shipped / "sentiment").iterdir()] == [packed.name]
    original = (trained / BRANCH_WEIGHTS).stat().st_size
    assert (packed / BRANCH_WEIGHTS).stat().st_size < original * 0.3
    stored = load_file(str(packed / BRANCH_WEIGHTS))
    assert {t.dtype for k, t in stored.items() if k.endswith(".weight") and t.ndim == 2} == {
        torch.int8
    }

    reloaded, info = load_branch(packed, base)  # the new weights hash is checked here
    assert info.meta["packed_from"]["version"] == trained.name
    inputs = tokenizer.pad(tokenizer.encode(["a fine film", "not good at all"]))
    tensors = [
        torch.from_numpy(a)
        for a in (inputs.input_ids, inputs.attention_mask, inputs.token_type_ids)
    ]
    with torch.no_grad():
        difference = np.abs(reloaded(*tensors).numpy() - models[1].eval()(*tensors).numpy()).max()
    assert difference < 2e-2  # int8 rounding of the weight matrices only


def test_int8_rowwise_codec_bounds_the_rounding_error() -> None:
    torch.manual_seed(0)
    state = {"w": torch.randn(64, 32) * 0.05, "b": torch.randn(64), "ids": torch.arange(3)}
    decoded = decode_weights(encode_int8_rowwise(state), INT8_ROWWISE)
    assert set(decoded) == set(state)
    assert torch.equal(decoded["b"], state["b"]) and torch.equal(decoded["ids"], state["ids"])
    half_step = state["w"].abs().amax(dim=1, keepdim=True) / 127 / 2
    assert bool(((decoded["w"] - state["w"]).abs() <= half_step * 1.0001).all())
    with pytest.raises(ValueError, match="unknown weights encoding"):
        decode_weights(state, "int4")


def test_built_model_is_readable_by_other_users(built: Path) -> None:
    """The container runs as its own user over a mounted model_store: temp-file
    permissions (0700/0600) must not survive publishing."""
    for path in [built, *built.rglob("*")]:
        need = 0o005 if path.is_dir() else 0o004
        assert path.stat().st_mode & need == need, path
