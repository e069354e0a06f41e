"""The inference engine: a verified model store, its tokenizer and an ORT session.

It knows nothing of HTTP or queues: it encodes texts for a task, runs one padded
batch of rows of any mix of tasks, and turns raw outputs into per-task predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.manifest import Manifest, StoreError, TaskEntry, load_manifest
from model_store.repository import resolve_store
from model_store.runtime import CPU, CUDA, MultiTaskSession, default_providers
from model_store.tokenizer import EncodedRow, PairTokenizer
from service.settings import Settings

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine cannot start with these settings (one line, shown to the operator)."""


@dataclass(frozen=True)
class Prediction:
    """A post-processed output of one row."""

    task: str
    values: np.ndarray  # probabilities (classification), probability (binary), score
    truncated: bool


def _providers(choice: str) -> list[str]:
    if choice == "cpu":
        return [CPU]
    available = default_providers()
    if choice == "cuda" and CUDA not in available:
        raise EngineError(
            "provider 'cuda' requested, but this onnxruntime build has no CUDA provider "
            "(install onnxruntime-gpu, or use provider 'auto' or 'cpu')"
        )
    return available


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def postprocess(task: TaskEntry, raw: np.ndarray) -> np.ndarray:
    """Raw head outputs -> what the API returns, by task kind."""
    if task.kind == "classification":
        return _softmax(raw.astype(np.float64))
    if task.kind == "binary":
        return 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
    return np.clip(raw.astype(np.float64), 0.0, 5.0)


class Engine:
    """Encode, run and post-process; thread-compatible (one batch at a time)."""

    def __init__(self, manifest: Manifest, session: MultiTaskSession) -> None:
        self.manifest = manifest
        self.session = session
        self.tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
        self.tasks = {task.name: task for task in manifest.tasks}

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load the store (or the repository's current version) that settings name."""
        return cls.load_store(resolve_store(settings.model_dir), settings)

    @classmethod
    def load_store(cls, store: Path, settings: Settings) -> Engine:
        """Verify the store's hashes, open the graph, and run one smoke batch."""
        manifest = load_manifest(store)
        providers = _providers(settings.provider)
        variant = settings.graph
        if variant == "auto":
            variant = "fp16" if CUDA in providers and "fp16" in manifest.graphs else "fp32"
        session = MultiTaskSession(
            manifest,
            variant,
            providers,
            settings.intra_op_threads,
            settings.inter_op_threads,
            spin_wait=settings.ort_spin_wait,
        )
        if settings.provider == "cuda" and session.providers[0] != CUDA:
            raise EngineError("provider 'cuda' requested, but ONNX Runtime could not use the GPU")
        if settings.provider == "auto" and CUDA in providers and session.providers[0] != CUDA:
            log.warning("CUDA provider unavailable at run time: serving on the CPU")
        engine = cls(manifest, session)
        engine.smoke_test()
        return engine

    @property
    def variant(self) -> str:
        return self.session.variant

    @property
    def provider(self) -> str:
        return self.session.providers[0]

    def version(self, task: str) -> str:
        return self.tasks[task].branch_version

    def smoke_test(self) -> None:
        """One row per task through the graph: fail at start-up, not on the first request."""
        rows, task_ids = [], []
        for task in self.manifest.tasks:
            rows += self.encode(["smoke test"], ["smoke test"] if task.pair else None)
            task_ids.append(task.task_id)
        predictions = self.run(rows, task_ids)
        if not all(np.isfinite(p.values).all() for p in predictions):
            raise StoreError(f"{self.manifest.directory}: the graph returns non-finite outputs")

    def encode(
        self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None
    ) -> list[EncodedRow]:
        return self.tokenizer.encode(texts_a, texts_b)

    def task_id(self, task: str) -> int:
        return self.tasks[task].task_id

    def run(self, rows: Sequence[EncodedRow], task_ids: Sequence[int]) -> list[Prediction]:
        """One ONNX Runtime call for rows of any tasks; predictions in row order."""
        ids = np.asarray(task_ids, dtype=np.int64)
        outputs = self.session.run(self.tokenizer.pad(rows), ids)
        predictions: list[Prediction | None] = [None] * len(rows)
        for task in self.manifest.tasks:
            positions = np.flatnonzero(ids == task.task_id)
            values = postprocess(task, outputs[task.name])
            for position, value in zip(positions, values, strict=True):
                predictions[position] = Prediction(task.name, value, rows[position].truncated)
        missing = [i for i, p in enumerate(predictions) if p is None]
        if missing:
            raise ValueError(f"rows {missing} have task ids the model does not serve")
        return predictions  # type: ignore[return-value]
