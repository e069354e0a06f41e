"""`--layers 8` end to end on a 12-layer base, as users are told to run it: train every
task, merge, serve, answer. The base is a random 12-layer BERT (hidden 32) with the
default base's tokenizer, so this runs in seconds; the answers are meaningless, every
step is real."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from model_store.manifest import load_manifest
from service.app import create_app
from service.engine import Engine
from service.settings import Settings
from tests.support.commands import ROOT, run
from tests.support.tiny_store import tiny_base_dir

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_layers_8_on_a_12_layer_base_trains_merges_and_serves(
    tmp_path: Path, data_dir: Path
) -> None:
    base = tiny_base_dir(tmp_path / "bert-12", layers=12)
    trained = run(
        FINETUNE,
        *("--layers", "8", "--base-model", str(base)),
        *("--data-dir", str(data_dir), "--out", str(tmp_path / "branches")),
        *("--epochs", "1", "--batch-size", "16", "--max-seq-len", "32", "--quiet"),
    )
    assert trained.returncode == 0, trained.stderr
    tasks = ("sentiment", "paraphrase", "similarity")
    for task in tasks:
        (version,) = (tmp_path / "branches" / task).iterdir()
        meta = json.loads((version / "branch.json").read_text())
        assert (meta["layers"], meta["first_layer"]) == (8, 4)
        assert meta["base_model"]["num_layers"] == 12

    store = tmp_path / "store"
    branches = [arg for task in tasks for arg in ("--branch", str(tmp_path / "branches" / task))]
    merged = run(
        "-m", "training.commands.merge", *branches, "--out", str(store), "--base-model", str(base)
    )
    assert merged.returncode == 0, merged.stderr
    manifest = load_manifest(store)
    assert manifest.trunk_layers == 4 and [t.layers for t in manifest.tasks] == [8, 8, 8]

    settings = Settings(model_dir=store, provider="cpu")
    app = create_app(settings, Engine.load(settings.model_dir, settings.engine_config()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sentiment = await http.post("/sentiment", json={"text": "a gripping, funny film"})
            pair = {"sentence1": "A man plays a guitar.", "sentence2": "A man plays music."}
            paraphrase = await http.post("/paraphrase", json=pair)
            similarity = await http.post("/similarity", json=pair)
            info = await http.get("/info")
    assert sentiment.status_code == paraphrase.status_code == similarity.status_code == 200
    assert 0 <= sentiment.json()["label"] <= 4
    assert abs(sum(sentiment.json()["probabilities"]) - 1) < 1e-5
    assert 0.0 <= paraphrase.json()["probability"] <= 1.0
    assert 0.0 <= similarity.json()["score"] <= 5.0
    assert info.status_code == 200
