"""Shared fixtures: the default base model (loaded once) and small task files the tests
write themselves from templates, so no test depends on the shared data being present."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.tokenizer import PairTokenizer
from service.app import create_app
from service.settings import Settings
from tests.support.live_repository import ADMIN_TOKEN
from tests.support.samples import pair_rows, sentiment_rows
from tests.support.servers import ThreadedServer
from tests.support.tiny_store import TinyBranches
from training.data.presets import PRESETS
from training.encoders.base_model import BaseModel, load_base_model


@pytest.fixture(scope="session")
def base() -> BaseModel:
    return load_base_model()


@pytest.fixture(scope="session")
def tokenizer(base: BaseModel) -> PairTokenizer:
    return PairTokenizer.from_dir(base.path, max_seq_len=32)


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
def tiny(tmp_path_factory) -> TinyBranches:
    """A tiny base and fresh random branches for it, on demand."""
    return TinyBranches(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def repository(tiny: TinyBranches, tmp_path: Path) -> Path:
    """A model repository whose current version serves the three presets."""
    repo = tmp_path / "repo"
    tiny.publish(repo, *(tiny.make(task, seed) for seed, task in enumerate(PRESETS)))
    return repo


@pytest.fixture
def live(repository: Path):
    """The repository served on loopback, admin routes open to ADMIN_TOKEN."""
    server = ThreadedServer(
        create_app(Settings(model_dir=repository, provider="cpu", admin_token=ADMIN_TOKEN))
    )
    yield server
    server.stop()
