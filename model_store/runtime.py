"""Run a store's merged graph with ONNX Runtime: the one place that knows ORT.

Used by the publish step (to verify a graph before it goes live) and by the service
(to serve it). Inputs are numpy arrays from `model_store.tokenizer` and a task mask (the
tasks each row asks, several for a multi-task row); outputs are the raw per-task head
outputs, each holding the rows that asked that task, in batch order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnxruntime as ort

from model_store.manifest import Manifest, StoreError
from model_store.tokenizer import EncodedBatch

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it (onnxruntime-gpu), then CPU as fallback."""
    available = ort.get_available_providers()
    return [CUDA, CPU] if CUDA in available else [CPU]


def task_mask(task_sets: Sequence[Iterable[int]], num_tasks: int) -> np.ndarray:
    """The graph's `task_mask` input: [rows, tasks] bool, row i asking the task ids in
    task_sets[i]."""
    mask = np.zeros((len(task_sets), num_tasks), dtype=bool)
    for row, tasks in enumerate(task_sets):
        mask[row, list(tasks)] = True
    return mask


class MultiTaskSession:
    """An ORT session over one graph variant of a store, with all graph optimizations."""

    def __init__(
        self,
        manifest: Manifest,
        variant: str = "fp32",
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spin_wait: bool = True,
        memory_pattern: bool = True,
    ) -> None:
        options = ort.SessionOptions()
        # ORT plans and keeps a memory pattern per distinct input shape: for a long run of
        # ever new batch shapes (a file scored chunk by chunk) its memory keeps rising
        # with the shapes seen; the arena alone serves them with a flat peak.
        options.enable_mem_pattern = memory_pattern
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT would also print each failed run to stderr; the exception it raises carries
        # the same message, and the caller reports it (one line at start-up, a failed batch).
        options.log_severity_level = 4
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        # ORT's worker threads busy-wait for the next run by default: fastest for
        # back-to-back runs, but in a server they take the CPU the HTTP side needs.
        spin = "1" if spin_wait else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        path = manifest.graph_path(variant)
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=list(providers or default_providers())
            )
        except Exception as err:  # ORT raises its own exception types for any load failure
            raise StoreError(f"ONNX Runtime cannot load {path}: {err}") from err
        self.manifest = manifest
        self.variant = variant
        self._outputs = [task.output for task in manifest.tasks]

    @property
    def outputs(self) -> list[str]:
        """The graph's output names."""
        return [output.name for output in self._session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def task_id(self, task: str) -> int:
        return self.manifest.task(task).task_id

    def run(self, batch: EncodedBatch, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs per task name, for `mask` [rows, tasks] (bool: the tasks each row
        asks); a task's output holds the rows that asked it, in batch order."""
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
            "task_mask": np.asarray(mask, dtype=bool),
        }
        results = self._session.run(self._outputs, feeds)
        return {task.name: out for task, out in zip(self.manifest.tasks, results, strict=True)}

    def run_task(self, batch: EncodedBatch, task: str) -> np.ndarray:
        """Raw outputs of every row of `batch` for one task."""
        rows = len(batch.input_ids)
        mask = task_mask([[self.task_id(task)]] * rows, len(self.manifest.tasks))
        return self.run(batch, mask)[task]
