"""The inference engine: a verified model store, its tokenizer and an ORT session.

It knows nothing of HTTP or queues: it encodes texts, runs one padded batch of rows of
any mix of tasks, and turns raw outputs into per-task values. A store is only accepted
after checks that make requests unable to fail later: the manifest's integrity, every
file's hash, the graph's outputs against the task definitions, one smoke batch at the store's
maximum length whose output widths must match each task's labels, and every task's
recorded probe answers (`model_store.probes`), so a store that mixes tasks up, or
answers them with another head or pooling, is refused before it serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from model_store import presets, probes
from model_store.graph_choice import (
    DEFAULT_TOLERANCE_POINTS,
    VARIANT_METRICS_KEY,
    GraphChoice,
    choose_graph,
)
from model_store.graph_structure import check_task_depths
from model_store.manifest import Manifest, StoreError, TaskEntry, load_manifest
from model_store.metric_consistency import check_variant_metrics
from model_store.repository import resolve_store
from model_store.runtime import CPU, CUDA, MultiTaskSession, default_providers, task_mask
from model_store.tokenizer import EncodedRow, PairTokenizer

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine cannot start with these settings (one line, shown to the operator)."""


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs to know, and nothing of HTTP."""

    graph: Literal["auto", "fp32", "int8", "fp16"] = "auto"
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    spin_wait: bool = True
    memory_pattern: bool = True  # ORT's per-shape memory plans (off: the offline scorer)
    # `auto` serves the fastest graph within this many points of fp32's validation
    # metric on every task (model_store.graph_choice).
    graph_tolerance_points: float = DEFAULT_TOLERANCE_POINTS


@dataclass(frozen=True)
class Prediction:
    """A post-processed output of one row."""

    task: str
    values: np.ndarray  # probabilities (classification), probability (binary), score,
    # or the pooled vector (embedding, float32, not normalised)
    truncated: bool
    tokens: int = 0  # the row's tokens, special tokens included (for usage accounting)
    raw: np.ndarray | None = None  # the graph's output before post-processing (raw scores)
    batch: BatchRun | None = None  # the ONNX Runtime run that answered it (for traces)


@dataclass(frozen=True)
class BatchRun:
    """One engine run: its rows, padded tokens and wall-clock span (ns since the epoch,
    as OpenTelemetry timestamps are)."""

    rows: int
    tokens: int
    started_ns: int
    ended_ns: int


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
    """Raw head outputs -> what the API returns, by the task's kind. An embedding stays
    the graph's pooled vector: whether it is normalised is the reader's choice."""
    if task.kind == "embedding":
        return raw
    if task.kind == "classification":
        return _softmax(raw.astype(np.float64))
    if task.kind in ("binary", "multilabel"):  # one independent sigmoid per output
        return 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
    low, high = task.definition.value_range or (-np.inf, np.inf)
    return np.clip(raw.astype(np.float64), low, high)


class Engine:
    """Encode, run and post-process; thread-compatible (one batch at a time)."""

    def __init__(
        self, manifest: Manifest, session: MultiTaskSession, graph_reason: str = "requested"
    ) -> None:
        self.manifest = manifest
        self.session = session
        self.graph_reason = graph_reason  # why this variant: for /info and the logs
        self.tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
        self.tasks = {task.name: task for task in manifest.tasks}
        self.probe_drift: float | None = None  # worst probe difference, once checked

    @classmethod
    def load(cls, model_dir: Path, config: EngineConfig) -> Engine:
        """Load the store (or the repository's current version) at `model_dir`."""
        return cls.load_store(resolve_store(model_dir), config)

    @classmethod
    def load_store(cls, store: Path, config: EngineConfig) -> Engine:
        """Verify the store, open the graph, and run the smoke batch; StoreError if any
        check fails, whatever the cause."""
        manifest = load_manifest(store)
        try:
            presets.check_presets(task.definition for task in manifest.tasks)
            presets.check_metrics(
                ((t.name, t.validation) for t in manifest.tasks),
                manifest.extra.get(VARIANT_METRICS_KEY),
            )
        except presets.DefinitionError as err:
            raise StoreError(f"{store}: {err}") from err
        check_variant_metrics(manifest, manifest.extra.get(VARIANT_METRICS_KEY))
        providers = _providers(config.provider)
        choice = GraphChoice(config.graph, f"--graph {config.graph} requested")
        if config.graph == "auto":
            choice = choose_graph(manifest, CUDA in providers, config.graph_tolerance_points)
        try:
            return cls._open(manifest, choice, providers, config)
        except probes.QuantizationDrift as drift:
            return cls._fall_back(manifest, choice, providers, config, drift)

    @classmethod
    def _fall_back(
        cls,
        manifest: Manifest,
        choice: GraphChoice,
        providers: list[str],
        config: EngineConfig,
        drift: probes.QuantizationDrift,
    ) -> Engine:
        """The quantized graph's answers moved on this CPU: if fp32 reproduces them, the
        cause is the quantized arithmetic here (not the store's wiring), and `auto`
        serves fp32 rather than answers no paired test measured; an explicit variant is
        refused, saying why. If fp32 misses too, its error (the wiring) is raised."""
        reason = (
            f"{drift.variant} refused on this CPU: quantization moved task {drift.task}'s "
            f"probe answers by {drift.difference:.3g} (bound {drift.bound:.3g})"
        )
        fallback = GraphChoice("fp32", f"{reason}; serving fp32")
        engine = cls._open(manifest, fallback, providers, config)
        if config.graph != "auto":
            raise StoreError(
                f"{drift} — the fp32 graph reproduces them, so this CPU computes the "
                f"{drift.variant} graph differently from the one that published it; serve "
                "--graph fp32 (or --graph auto, which falls back to fp32)"
            )
        log.warning("%s: %s (was: %s)", manifest.directory, fallback.reason, choice.reason)
        return engine

    @classmethod
    def _open(
        cls,
        manifest: Manifest,
        choice: GraphChoice,
        providers: list[str],
        config: EngineConfig,
    ) -> Engine:
        """Open one graph variant and run every load-time check on it."""
        store = manifest.directory
        variant = choice.variant
        session = MultiTaskSession(
            manifest,
            variant,
            providers,
            config.intra_op_threads,
            config.inter_op_threads,
            spin_wait=config.spin_wait,
            memory_pattern=config.memory_pattern,
        )
        if config.provider == "cuda" and session.providers[0] != CUDA:
            raise EngineError("provider 'cuda' requested, but ONNX Runtime could not use the GPU")
        if config.provider == "auto" and CUDA in providers and session.providers[0] != CUDA:
            log.warning("CUDA provider unavailable at run time: serving on the CPU")
        engine = cls(manifest, session, choice.reason)
        engine.check_outputs()
        try:
            check_task_depths(manifest, variant)
        except StoreError:
            raise
        except Exception as err:  # onnx raises several types: all mean an unreadable graph
            raise StoreError(f"{store}: cannot read its {variant} graph: {err}") from err
        try:
            engine.smoke_test()
            engine.probe_drift = probes.worst(
                probes.check(manifest, engine.tokenizer, engine.session.run, variant)
            )
        except StoreError:
            raise
        except Exception as err:  # ORT and numpy raise many types; all mean a bad store
            raise StoreError(f"{store}: the smoke batch failed: {err}") from err
        return engine

    @property
    def variant(self) -> str:
        return self.session.variant

    @property
    def provider(self) -> str:
        return self.session.providers[0]

    def version(self, task: str) -> str:
        return self.tasks[task].branch_version

    def check_outputs(self) -> None:
        """Every task's output exists in the graph (a manifest naming another output would
        otherwise fail every request)."""
        missing = [t.output for t in self.manifest.tasks if t.output not in self.session.outputs]
        if missing:
            raise StoreError(
                f"{self.manifest.directory}: the graph has no output {', '.join(missing)} "
                f"(it has {', '.join(self.session.outputs)})"
            )

    def smoke_test(self) -> None:
        """Two rows per task through the graph, one short and one at the maximum length:
        fail at start-up (or reload), not on the first long request. Each task's output
        must be as wide as its definition says (labels, or one value) and finite."""
        rows, task_sets = [], []
        longest = " ".join(["smoke"] * self.manifest.max_seq_len)
        for task in self.manifest.tasks:
            for text in ("smoke test", longest):
                rows += self.encode([text], [text] if task.pair else None)
                task_sets.append((task.task_id,))
        mask = task_mask(task_sets, len(self.manifest.tasks))
        outputs = self.session.run(self.tokenizer.pad(rows), mask)
        for task in self.manifest.tasks:
            shape = outputs[task.name].shape
            expected = (2, task.definition.num_outputs)
            if shape != expected:
                raise StoreError(
                    f"{self.manifest.directory}: task {task.name} answers {shape[-1:]} values "
                    f"per row, but its definition needs {expected[1]}"
                )
            if not np.isfinite(outputs[task.name]).all():
                raise StoreError(f"{self.manifest.directory}: the graph returns non-finite outputs")

    def encode(
        self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None
    ) -> list[EncodedRow]:
        return self.tokenizer.encode(texts_a, texts_b)

    def task_id(self, task: str) -> int:
        return self.tasks[task].task_id

    def run(
        self, rows: Sequence[EncodedRow], task_sets: Sequence[Sequence[int]]
    ) -> list[dict[str, Prediction]]:
        """One ONNX Runtime call for rows of any tasks, each row asking one task or
        several (its frozen layers then run once, and it fans out at the forks); per
        row, in row order, a prediction per task it asked, by task name."""
        served = len(self.manifest.tasks)
        unknown = [
            i
            for i, tasks in enumerate(task_sets)
            if not tasks or not all(0 <= task < served for task in tasks)
        ]
        if unknown:
            raise ValueError(f"rows {unknown} have task ids the model does not serve")
        mask = task_mask(task_sets, served)
        started = time.time_ns()
        padded = self.tokenizer.pad(rows)
        outputs = self.session.run(padded, mask)
        run = BatchRun(len(rows), int(padded.input_ids.size), started, time.time_ns())
        predictions: list[dict[str, Prediction]] = [{} for _ in rows]
        for task in self.manifest.tasks:
            positions = np.flatnonzero(mask[:, task.task_id])
            values = postprocess(task, outputs[task.name])
            for position, value, raw in zip(positions, values, outputs[task.name], strict=True):
                predictions[position][task.name] = Prediction(
                    task.name, value, rows[position].truncated, len(rows[position]), raw, run
                )
        return predictions
