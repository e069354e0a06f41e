"""Publish a changed task by splicing its piece into the current version's graphs.

Publishing one task used to export, fuse, quantize and convert the whole tree (every
frozen layer and every task's branch: 16 layer instances for the default model)
although only one branch changed. But in the tree-shaped graph a task's nodes are
exactly those only its output needs, fed by the row tensors the frozen path carries at
its fork depth (`training.graph.merged_model`), and int8 quantization and fp16
conversion act node by node. So when the current version's graphs were built by this
code (the same layout, opset and torch/onnx/onnxruntime versions, recorded in the
manifest under `graph_layout`) from the same base and maximum length, the next version
is made from them:

  - a removed or replaced task's output is dropped, and every node and initializer
    only it needed goes with it (`prune`);
  - a new or replaced task's piece (`training.graph.piece`: its layers and head, plus
    the frozen layers from its fork to the next one when no task forked there yet) is
    exported, fused, quantized and converted on its own, and each variant's piece is
    added to the same variant's graph, its names prefixed with the task, its branch
    version and its fork (`Insert.prefix`);
  - the task mask's columns are renumbered and the routing's fork depths replaced.

The result has the nodes a full export has (a test holds the spliced graphs to the full
rebuild's outputs), the other tasks' nodes are untouched (their outputs stay
bit-identical), and it is verified against the merged PyTorch model like any build.
Whenever that does not apply (`plan_splice` says why: a new repository, another base,
graphs built by another version, a fork depth no task uses any more or above the
frozen layers, a fork at 0) the graphs are built in full.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model_store.manifest import GRAPH_FILES, Manifest
from training.graph.fusion import attention_shape, fusable, optimize_bert
from training.graph.int8 import LayerDepths, quantize_int8
from training.graph.merged_model import MergedModel, output_name
from training.graph.onnx_export import OPSET, convert_fp16
from training.graph.piece import PIECE_HANDOVER, TaskPiece, export_piece

LAYOUT_KEY = "graph_layout"
LAYOUT_VERSION = 1


class SpliceError(Exception):
    """The current graphs are not shaped as a splice needs: build in full instead."""


def libraries() -> dict[str, str]:
    """The versions a graph's bytes depend on."""
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "ort": onnxruntime.__version__}


def frozen_hidden_name(depth: int) -> str:
    """The full export's name of the hidden state after frozen layer depth-1."""
    return f"/frozen.{depth - 1}/output/LayerNorm/LayerNormalization_output_0"


def full_layout(merged: MergedModel) -> dict | None:
    """What a full, fused export's graphs let a later publish splice into; None for a
    graph the splice does not know (unfused)."""
    if not fusable(merged):
        return None
    return {
        "version": LAYOUT_VERSION,
        "opset": OPSET,
        "libraries": libraries(),
        "hidden": {str(d): frozen_hidden_name(d) for d in range(1, merged.frozen_depth + 1)},
    }


@dataclass(frozen=True)
class Insert:
    """A task's piece to add: its index in the new version, its fork depth, and the
    next fork above it when no other task forks there (the piece then narrows the
    frozen path itself)."""

    task: str
    version: str  # the branch's
    index: int
    fork: int
    next_fork: int | None

    @property
    def prefix(self) -> str:
        """The piece's names in the graph: unique (one piece per task, branch and fork)
        and the same whenever the same piece is spliced, so that publishing the same
        change twice (a task removed and added back) gives the same bytes, which the
        repository then stores once (`model_store.dedupe`)."""
        above = "" if self.next_fork is None else f"-{self.next_fork}"
        return f"{self.task}@{self.version}.{self.fork}{above}/"


@dataclass(frozen=True)
class SplicePlan:
    previous: Manifest
    dropped: tuple[int, ...]  # the previous version's task ids to drop, highest first
    inserts: tuple[Insert, ...]  # in the new version's task order
    forks: tuple[int, ...]  # the new version's fork depths, by task id

    def describe(self) -> str:
        if not self.inserts and not self.dropped:
            return f"copied from {self.previous.name} (no task changed)"
        names = ", ".join(insert.task for insert in self.inserts) or "no task"
        removed = len(self.dropped) - len(self.inserts)
        less = f", {removed} task(s) dropped" if removed > 0 else ""
        return (
            f"spliced into {self.previous.name}'s graphs ({names} exported{less}; "
            "the other tasks' nodes reused)"
        )


def _same_task(previous: Manifest, name: str, merged: MergedModel, info: dict) -> bool:
    try:
        old = previous.task(name)
    except KeyError:  # a new task
        return False
    index = merged.task_names.index(name)
    return (
        old.branch_version == info["branch_version"]
        and old.fork_depth == merged.fork_depths[index]
        and old.pooling == info["pooling"]
        and old.layers == info["layers"]
    )


def plan_splice(
    previous: Manifest | None,
    merged: MergedModel,
    tasks: Sequence[dict],
    variants: Sequence[str],
    fuse: bool,
    base_model: dict,
    max_seq_len: int,
) -> SplicePlan | str:
    """How to make the new version's graphs from `previous`'s, or why they are built in
    full. `tasks`: the new version's tasks in order, each {"name", "branch_version",
    "pooling", "layers"}."""
    if previous is None:
        return "a new repository"
    layout = previous.extra.get(LAYOUT_KEY) or {}
    if not fuse or not fusable(merged):
        return "unfused graphs are always built in full"
    if (
        layout.get("version") != LAYOUT_VERSION
        or layout.get("opset") != OPSET
        or layout.get("libraries") != libraries()
    ):
        return f"{previous.name}'s graphs were built by another version of this code"
    if previous.base_model.get("sha256") != base_model.get("sha256"):
        return f"another base model than {previous.name}'s"
    if previous.max_seq_len != max_seq_len:
        return f"another maximum length than {previous.name}'s"
    missing = [v for v in variants if v not in previous.graphs]
    if missing:
        return f"{previous.name} has no {missing[0]} graph to splice into"
    names = [task["name"] for task in tasks]
    kept = [t["name"] for t in tasks if _same_task(previous, t["name"], merged, t)]
    old_names = [task.name for task in previous.tasks]
    if kept != [name for name in old_names if name in kept]:
        return "the tasks change order"
    old_forks = {task.fork_depth for task in previous.tasks}
    new_forks = set(merged.fork_depths)
    top = max(old_forks)
    if not old_forks <= new_forks:
        return "a fork depth would be left without a task (the frozen path changes shape)"
    if max(new_forks) != top:
        return "the frozen layers the graph holds change"
    inserts = []
    for index, name in enumerate(names):
        if name in kept:
            continue
        fork = merged.fork_depths[index]
        if fork == 0:
            return f"task {name} forks at depth 0 (it embeds its own rows)"
        later = sorted(f for f in old_forks | {i.fork for i in inserts} if f > fork)
        known = fork in old_forks or any(i.fork == fork for i in inserts)
        version = tasks[index]["branch_version"]
        inserts.append(Insert(name, version, index, fork, None if known else later[0]))
    dropped = tuple(sorted((i for i, n in enumerate(old_names) if n not in kept), reverse=True))
    return SplicePlan(previous, dropped, tuple(inserts), tuple(merged.fork_depths))


# --- graph editing -------------------------------------------------------------------


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _chain(graph: onnx.GraphProto, start: str) -> set[str]:
    """`start` and every row selection of it (Compress of Compress ...)."""
    names, grew = {start}, True
    while grew:
        grew = False
        for node in graph.node:
            if (
                node.op_type == "Compress"
                and node.input[0] in names
                and node.output[0] not in names
            ):
                names.add(node.output[0])
                grew = True
    return names


def _ancestors(graph: onnx.GraphProto, *names: str) -> set[int]:
    """Indices of the nodes `names` depend on."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    seen: set[int] = set()
    stack = list(names)
    while stack:
        index = producers.get(stack.pop())
        if index is None or index in seen:
            continue
        seen.add(index)
        stack.extend(graph.node[index].input)
    return seen


@dataclass(frozen=True)
class _Routing:
    """The routing tensors of a merged graph."""

    fork_mul: onnx.NodeProto  # task_mask (as int64) * fork depths
    need: str  # the deepest fork each row needs
    masks: set[str]
    asks: set[str]
    needs: set[str]


def _routing(graph: onnx.GraphProto) -> _Routing:
    casts = [n for n in graph.node if n.op_type == "Cast" and list(n.input) == ["task_mask"]]
    muls = [n for n in graph.node if n.op_type == "Mul" and casts and casts[0].output[0] in n.input]
    reduce = [
        n
        for n in graph.node
        if n.op_type == "ReduceMax" and muls and n.input[0] == muls[0].output[0]
    ]
    if len(casts) != 1 or len(muls) != 1 or len(reduce) != 1:
        raise SpliceError("the graph's task routing is not where a splice expects it")
    need = reduce[0].output[0]
    return _Routing(
        muls[0],
        need,
        _chain(graph, "attention_mask"),
        _chain(graph, "task_mask"),
        _chain(graph, need),
    )


def _block_rows(
    graph: onnx.GraphProto, routing: _Routing, hidden: dict[int, str], depth: int
) -> dict[str, str]:
    """The row tensors of the frozen-path block that computes frozen layer depth-1: its
    attention mask, asks and need (selected when the block starts)."""
    producers = _producers(graph)
    depth_of = {name: d for d, name in hidden.items()}
    blocks: dict[int, dict[str, str]] = {}
    for node in graph.node:
        if node.op_type != "Compress":
            continue
        condition = producers.get(node.input[1])
        if condition is None or condition.op_type not in ("Greater", "GreaterOrEqual"):
            continue
        if condition.input[0] not in routing.needs:
            continue
        start = 0 if condition.op_type == "Greater" else None
        rows = {}
        for other in graph.node:
            if other.op_type != "Compress" or other.input[1] != node.input[1]:
                continue
            source = other.input[0]
            if source in routing.masks:
                rows["attention_mask"] = other.output[0]
            elif source in routing.asks:
                rows["asks"] = other.output[0]
            elif source in routing.needs:
                rows["need"] = other.output[0]
            elif source in depth_of:
                start = depth_of[source]
        if start is not None and "attention_mask" in rows and "asks" in rows:
            # The last block's need is not selected when nothing narrows after it.
            rows.setdefault("need_source", condition.input[0])
            rows["condition"] = node.input[1]
            blocks[start] = rows
    starts = [start for start in blocks if start <= depth - 1]
    if not starts:
        raise SpliceError(f"no frozen-path block computes layer {depth - 1}")
    return {**blocks[max(starts)], "start": max(starts)}


def _constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    node = _producers(graph).get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    raise SpliceError(f"{name} is not a constant")


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    """An initializer `name` holding `value`: the graph's own if it has it already."""
    for initializer in graph.initializer:
        if initializer.name == name:
            if not np.array_equal(numpy_helper.to_array(initializer), value):
                raise SpliceError(f"the graph's {name} holds another value")
            return name
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def renumber_columns(
    graph: onnx.GraphProto, routing: _Routing, renumber: Callable[[int], int]
) -> None:
    """Point every task's column of the task mask (a Gather of axis 1 on the asks
    chain) at its new index; a constant shared with other nodes is left alone."""
    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in routing.asks:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis != 1:
            raise SpliceError("a task's column of the task mask is read unexpectedly")
        value = _constant_value(graph, node.input[1])
        new = np.array(renumber(int(value)), dtype=value.dtype).reshape(value.shape)
        if int(new) != int(value):
            node.input[1] = _constant(graph, f"splice/column.{int(new)}", new)


def set_forks(graph: onnx.GraphProto, routing: _Routing, forks: Sequence[int]) -> None:
    """The routing's fork depths (one per task) and the task mask's width."""
    mul = routing.fork_mul
    slot = next(i for i, name in enumerate(mul.input) if _is_constant(graph, name))
    old = _constant_value(graph, mul.input[slot])
    new = np.array(forks, dtype=old.dtype)
    if not np.array_equal(old, new):
        name = "splice/forks." + "-".join(str(f) for f in forks)
        mul.input[slot] = _constant(graph, name, new)
    task_mask = next(value for value in graph.input if value.name == "task_mask")
    task_mask.type.tensor_type.shape.dim[1].dim_value = len(forks)


def _is_constant(graph: onnx.GraphProto, name: str) -> bool:
    try:
        _constant_value(graph, name)
    except SpliceError:
        return False
    return True


def drop_output(graph: onnx.GraphProto, name: str) -> None:
    """Drop a task's output and the node that makes it (a new piece may make an output of
    that name); what only it needed goes at the next `prune`, which runs after the new
    pieces are in (they may need what the dropped task alone read, such as the hidden
    state at its fork)."""
    index = next(i for i, value in enumerate(graph.output) if value.name == name)
    del graph.output[index]
    producer = next(i for i, node in enumerate(graph.node) if name in node.output)
    del graph.node[producer]


def prune(graph: onnx.GraphProto) -> None:
    """Remove every node no graph output needs, and the initializers and shape records
    nothing reads any more (the graph's inputs all stay)."""
    needed = _ancestors(graph, *(value.name for value in graph.output))
    nodes = [node for i, node in enumerate(graph.node) if i in needed]
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in graph.node for name in node.input}
    initializers = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    made = {out for node in graph.node for out in node.output}
    infos = [value for value in graph.value_info if value.name in made]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def toposort(graph: onnx.GraphProto) -> None:
    """Order the nodes so that each comes after the producers of its inputs (keeping
    the present order where it already is)."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    order: list[int] = []
    state: dict[int, int] = {}
    for root in range(len(graph.node)):
        stack = [(root, False)]
        while stack:
            index, expanded = stack.pop()
            if expanded:
                state[index] = 2
                order.append(index)
                continue
            if state.get(index):
                continue
            state[index] = 1
            stack.append((index, True))
            for name in reversed(graph.node[index].input):
                producer = producers.get(name)
                if producer is not None and not state.get(producer):
                    stack.append((producer, False))
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def attach(
    model: onnx.ModelProto,
    piece: onnx.ModelProto,
    insert: Insert,
    hidden: dict[int, str],
) -> dict[int, str]:
    """Add `piece` (one variant of `insert`'s piece) to `model` (the same variant),
    fed by the frozen path's row tensors at its fork; if it narrows the frozen path,
    whatever read the rows at the next fork reads the piece's instead. Returns the
    hidden-state names by depth after the splice."""
    graph = model.graph
    prefix = insert.prefix
    routing = _routing(graph)
    if insert.fork not in hidden:
        raise SpliceError(f"the graph has no hidden state at depth {insert.fork}")
    rows = _block_rows(graph, routing, hidden, insert.fork)
    wanted = {value.name for value in piece.graph.input}
    if "need" in wanted and "need" not in rows:
        rows["need"] = prefix + "need_rows"
        graph.node.add().CopyFrom(
            onnx.helper.make_node(
                "Compress",
                [rows["need_source"], rows["condition"]],
                [rows["need"]],
                name=prefix + "need_rows",
                axis=0,
            )
        )
    feeds = {"hidden": hidden[insert.fork], **rows}  # the piece's inputs, by name
    rename = {value.name: feeds[value.name] for value in piece.graph.input}
    logits = output_name(insert.task)
    for node in piece.graph.node:
        for name in node.output:
            if name and name not in rename:
                rename[name] = name if name == logits else prefix + name
    for initializer in piece.graph.initializer:
        rename[initializer.name] = prefix + initializer.name
    hidden = dict(hidden)
    if insert.next_fork is not None:
        if rows["start"] > 0:
            # The block now ends at the new fork: it must carry the rows that need it.
            narrowing = _producers(graph)[rows["condition"]]
            bound = _constant_value(graph, narrowing.input[1])
            if narrowing.op_type != "GreaterOrEqual" or int(bound) != insert.next_fork:
                raise SpliceError(f"the frozen path does not narrow at depth {rows['start']}")
            narrowing.input[1] = _constant(
                graph,
                f"splice/narrowing.{insert.fork}",
                np.array(insert.fork, dtype=bound.dtype).reshape(bound.shape),
            )
        top = hidden[insert.next_fork]
        handover = dict(
            zip(
                (top, rows["attention_mask"], rows["asks"], rows["need"]),
                (rename[name] for name in PIECE_HANDOVER),
                strict=True,
            )
        )
        upstream = _ancestors(graph, top)
        for index, node in enumerate(graph.node):
            if index in upstream:
                continue
            for slot, name in enumerate(node.input):
                if name in handover:
                    node.input[slot] = handover[name]
        for depth in range(insert.fork + 1, insert.next_fork):
            hidden[depth] = prefix + frozen_hidden_name(depth)
        hidden[insert.next_fork] = rename["hidden_out"]
    for node in piece.graph.node:
        added = graph.node.add()
        added.CopyFrom(node)
        added.name = prefix + node.name if node.name else ""  # ORT allows unnamed ones
        for slot, name in enumerate(added.input):
            if name:
                added.input[slot] = rename.get(name, name)
        for slot, name in enumerate(added.output):
            if name:
                added.output[slot] = rename[name]
    for initializer in piece.graph.initializer:
        added_init = graph.initializer.add()
        added_init.CopyFrom(initializer)
        added_init.name = rename[initializer.name]
    output = next(value for value in piece.graph.output if value.name == logits)
    position = min(insert.index, len(graph.output))
    graph.output.insert(position, output)
    domains = {opset.domain for opset in model.opset_import}
    for opset in piece.opset_import:
        if opset.domain not in domains:
            model.opset_import.append(opset)
    return hidden


def splice_model(
    model: onnx.ModelProto,
    plan: SplicePlan,
    pieces: dict[str, onnx.ModelProto],
) -> dict[int, str]:
    """One variant's next graph from its previous one, in place; the hidden-state
    names by depth it ends with."""
    graph = model.graph
    hidden = {int(d): name for d, name in plan.previous.extra[LAYOUT_KEY]["hidden"].items()}
    made = {out for node in graph.node for out in node.output}
    if not set(hidden.values()) <= made:
        raise SpliceError(f"{plan.previous.name}'s graph lacks the hidden states it records")
    old_tasks = plan.previous.tasks
    for index in plan.dropped:
        drop_output(graph, old_tasks[index].output)
        renumber_columns(
            graph,
            _routing(graph),
            lambda c, i=index: c - 1 if c > i else c,
        )
    for insert in plan.inserts:
        renumber_columns(
            graph,
            _routing(graph),
            lambda c, i=insert.index: c + 1 if c >= i else c,
        )
        hidden = attach(model, pieces[insert.task], insert, hidden)
    set_forks(graph, _routing(graph), plan.forks)
    prune(graph)
    toposort(graph)
    # The shapes the quantizer or converter recorded hold the old task count; ONNX
    # Runtime infers them all again at load.
    del graph.value_info[:]
    made = {out for node in graph.node for out in node.output}
    if not set(hidden.values()) <= made:
        raise SpliceError("the spliced graph lost a hidden state of the frozen path")
    return hidden


def piece_graphs(
    merged: MergedModel, insert: Insert, variants: Iterable[str], scratch: Path
) -> dict[str, onnx.ModelProto]:
    """`insert`'s piece, exported, fused, and derived per variant as a full build
    derives its graphs from the fused fp32 one."""
    piece = TaskPiece(merged, insert.task, insert.next_fork)
    unfused = scratch / f"{insert.task}.unfused.onnx"
    export_piece(piece, unfused)
    fused = scratch / f"{insert.task}.fp32.onnx"
    optimize_bert(unfused, fused, *attention_shape(merged))
    paths = {"fp32": fused}
    if "int8" in variants:
        paths["int8"] = scratch / f"{insert.task}.int8.onnx"
        depths = LayerDepths(merged.num_layers, {"branch": piece.fork})  # piece's names
        quantize_int8(fused, paths["int8"], depths)
    if "fp16" in variants:
        paths["fp16"] = scratch / f"{insert.task}.fp16.onnx"
        convert_fp16(fused, paths["fp16"], keep_io_types=[output_name(insert.task)])
    return {variant: onnx.load(str(path)) for variant, path in paths.items()}


def splice_graphs(
    plan: SplicePlan, merged: MergedModel, staging: Path, variants: Sequence[str]
) -> dict:
    """Write every variant's next graph into `staging`; the layout to record. With no
    task changed (the same branches published again) they are the previous files."""
    if not plan.inserts and not plan.dropped:
        for variant in variants:
            shutil.copyfile(plan.previous.graph_path(variant), staging / GRAPH_FILES[variant])
        return plan.previous.extra[LAYOUT_KEY]
    with tempfile.TemporaryDirectory(prefix=".splice-", dir=staging) as scratch:
        pieces = {
            insert.task: piece_graphs(merged, insert, variants, Path(scratch))
            for insert in plan.inserts
        }
    layouts = []
    for variant in variants:
        model = onnx.load(str(plan.previous.graph_path(variant)))
        by_task = {task: graphs[variant] for task, graphs in pieces.items()}
        layouts.append(splice_model(model, plan, by_task))
        target = staging / GRAPH_FILES[variant]
        onnx.save(model, str(target))
        onnx.checker.check_model(str(target))
    if any(layout != layouts[0] for layout in layouts):
        raise SpliceError("the variants' graphs disagree on the frozen path's layout")
    layout = full_layout(merged) or {}
    layout["hidden"] = {str(d): name for d, name in sorted(layouts[0].items())}
    return layout
