"""Shared fixtures, torch-free at import: the service's tests run without torch.

Stores come from `tests.support.stores` (built once per run where torch is installed,
read from `$BERT_MTS_TEST_STORES` where it is not); what needs torch itself (the base
model, fresh branches) imports it inside its fixture and is skipped without it. Task
files are written from templates, so no test depends on the shared data being present.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from model_store.tokenizer import PairTokenizer
from service.app import create_app
from service.settings import Settings
from tests.support.commands import ROOT
from tests.support.live_repository import ADMIN_TOKEN
from tests.support.samples import pair_rows, sentiment_rows
from tests.support.servers import ThreadedServer
from tests.support.stores import StoreCache, cache_root, requires_torch

# Commands the tests run by path (`python training/finetune_top_layers.py`, torchrun)
# import this checkout, whichever checkout the environment's editable install names.
os.environ["PYTHONPATH"] = os.pathsep.join(
    part for part in (str(ROOT), os.environ.get("PYTHONPATH")) if part
)

# Training commands that name no base and find no repository default to the 12-layer
# all-mpnet-base-v2, which a first use downloads (400 MB): the tests train the packaged
# 6-layer base instead, unless they say otherwise.
os.environ.setdefault("BERT_MTS_BASE_MODEL", "all-minilm-l6-v2")


def _models_dir_of_shipped_only() -> str:
    """A models directory holding only the shipped models (a link to this checkout's):
    the tests never follow the developer's built repositories (after `make serve`,
    models/default holds the 12-layer default, which training without --store would
    follow)."""
    directory = Path(tempfile.mkdtemp(prefix="bert-mts-test-models-"))
    (directory / "shipped").symlink_to(ROOT / "models" / "shipped")
    return str(directory)


os.environ.setdefault("BERT_MTS_MODELS_DIR", _models_dir_of_shipped_only())

PRESET_TASKS = ("sentiment", "paraphrase", "similarity")


@pytest.fixture(scope="session")
def stores(tmp_path_factory) -> StoreCache:
    return StoreCache(cache_root(tmp_path_factory.mktemp("stores")))


def _tiny(directory: Path) -> None:
    from tests.support.tiny_store import build_tiny_store

    build_tiny_store(directory)


def _tiny_repository(directory: Path) -> None:
    from tests.support.tiny_store import TinyBranches

    tiny = TinyBranches(directory / "tiny")
    tiny.publish(
        directory / "repo", *(tiny.make(task, seed) for seed, task in enumerate(PRESET_TASKS))
    )


def _embedding_repository(directory: Path) -> None:
    from tests.support.tiny_embedding import embedding_repository

    embedding_repository(directory, variants=())


@pytest.fixture(scope="session")
def embedding_repository(stores: StoreCache) -> Path:
    """A repository serving sentiment (K=1) and the base's embedding task on a 3-layer
    random base, fp32 only (`tests.support.tiny_embedding`; read-only: copy it to change
    it); the base lies beside it (`.parent / "base"`)."""
    return stores.get("embedding-repository", _embedding_repository) / "repo"


@pytest.fixture(scope="session")
def tiny_store(stores: StoreCache) -> Path:
    """A fp32 store of the three presets on a 2-layer random base (read-only: copy it to
    change it); its base and branches lie beside it (`.parent / "base"`, `"branches"`)."""
    return stores.get("tiny", _tiny) / "store"


@pytest.fixture(scope="session")
def tokenizer(stores: StoreCache) -> PairTokenizer:
    """The default base's tokenizer (the tiny base carries its tokenizer.json)."""
    return PairTokenizer.from_dir(stores.get("tiny", _tiny) / "base", max_seq_len=32)


@pytest.fixture(scope="session")
def base():
    """The default base model (torch)."""
    requires_torch()
    from training.encoders.base_model import load_base_model

    return load_base_model()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A directory laid out like ../shared/data, with 80 rows per task."""
    directory = tmp_path / "data"
    directory.mkdir()
    sst = ["\tid\tsentence\tsentiment"]
    sst += [f"{i}\ts{i}\t{text}\t{label}" for i, (text, label) in enumerate(sentiment_rows(80))]
    quora = ["\tid\tsentence1\tsentence2\tis_duplicate"]
    quora += [f"{i}\tq{i}\t{a}\t{b}\t{s / 5:.1f}" for i, (a, b, s) in enumerate(pair_rows(80))]
    sts = ["\tid\tsentence1\tsentence2\tsimilarity"]
    sts += [f"{i}\tt{i}\t{a}\t{b}\t{s}" for i, (a, b, s) in enumerate(pair_rows(80, seed=1))]
    for name, lines in (("sst-train.tsv", sst), ("quora-train.tsv", quora), ("sts-train.tsv", sts)):
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny base and fresh random branches for it, on demand (torch)."""
    requires_torch()
    from tests.support.tiny_store import TinyBranches

    return TinyBranches(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def repository(stores: StoreCache, tmp_path: Path) -> Path:
    """A model repository whose current version serves the three presets (a fresh copy)."""
    repo = tmp_path / "repo"
    shutil.copytree(stores.get("tiny-repository", _tiny_repository) / "repo", repo)
    return repo


@pytest.fixture
def live(repository: Path):
    """The repository served on loopback, admin routes open to ADMIN_TOKEN."""
    server = ThreadedServer(
        create_app(Settings(model_dir=repository, provider="cpu", admin_token=ADMIN_TOKEN))
    )
    yield server
    server.stop()
