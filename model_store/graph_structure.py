"""What a served graph's shape says about each task's depth, checked against the manifest.

The manifest states, per task, how many tuned layers it has (K) and at which layer it
forks off the shared trunk; `/v1/tasks` shows both and operators plan by them. Its
hashes prove the graph is the one published, and the probes prove each task answers
as its branch did, but neither proves the manifest's K and fork depth describe that
graph: a manifest rewritten (and re-signed) to claim other depths would pass both. So
at load the graph itself is read: in the tree-shaped graph each task's rows leave the
trunk through one row selection (a `Compress` of the hidden state by the task's rows), so
the attention blocks upstream of that fork are the task's shared layers and those
between it and the task's output are its own. An attention block is a fused attention
node (BERT's and MPNet's alike), or the Softmax of an unfused one (`--no-fuse`); int8
graphs keep theirs.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from model_store.manifest import MANIFEST_FILE, Manifest, StoreError

ATTENTION_OPS = frozenset({"MultiHeadAttention", "Attention", "QAttention", "Softmax"})


class _Graph:
    """The producers of every tensor of an ONNX graph (nodes only, no weights kept)."""

    def __init__(self, path: Path) -> None:
        import onnx  # the serving extras carry it for this check alone: loaded late

        graph = onnx.load(str(path), load_external_data=False).graph
        self.nodes = [(node.op_type, tuple(node.input), tuple(node.output)) for node in graph.node]
        del graph
        self.producer = {
            out: index for index, (_, _, outs) in enumerate(self.nodes) for out in outs
        }

    def ancestors(self, tensor: str) -> set[int]:
        """Indices of the nodes `tensor` depends on."""
        seen: set[int] = set()
        queue = deque([tensor])
        while queue:
            index = self.producer.get(queue.popleft())
            if index is None or index in seen:
                continue
            seen.add(index)
            queue.extend(self.nodes[index][1])
        return seen

    def attention_blocks(self, nodes: set[int]) -> int:
        return sum(1 for index in nodes if self.nodes[index][0] in ATTENTION_OPS)

    def depths(self, output: str) -> tuple[int, int] | None:
        """(shared layers, own layers) of the task answering `output`, or None when the
        graph shows no fork for it."""
        upstream = self.ancestors(output)
        forks = [index for index in upstream if self.nodes[index][0] == "Compress"]
        # The fork of this task's rows: the selection with the most layers before it
        # (the inputs are selected too, before any layer: the batch's rows for the
        # trunk, and the task's own rows for a task that forks at layer 0).
        best = None
        for index in forks:
            shared = self.attention_blocks(self.ancestors(self.nodes[index][1][0]))
            if best is None or shared > best:
                best = shared
        if best is None:
            return None
        return best, self.attention_blocks(upstream) - best


def check_task_depths(manifest: Manifest, variant: str) -> None:
    """StoreError in one line if the `variant` graph's shape contradicts a task's K or
    fork depth in the manifest."""
    graph = _Graph(manifest.directory / manifest.graphs[variant])
    where = manifest.directory / MANIFEST_FILE
    for task in manifest.tasks:
        if task.output not in graph.producer:
            raise StoreError(f"{where}: the {variant} graph has no output {task.output}")
        found = graph.depths(task.output)
        if found is None:
            raise StoreError(f"{where}: the {variant} graph shows no fork for task {task.name}")
        shared, own = found
        if (shared, own) != (task.fork_depth, task.layers):
            raise StoreError(
                f"{where}: task {task.name} is recorded with {task.layers} tuned layers forking "
                f"at layer {task.fork_depth}, but its path in the {variant} graph has {own} "
                f"after a fork at layer {shared}: the manifest does not describe its graph"
            )
