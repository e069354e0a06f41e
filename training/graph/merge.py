"""Merge task branches into one tree-shaped graph and publish it to the model store.

The command is `bert-mts-merge` (`training.commands.merge`). Branches must share the
base weights, tokenizer and max length, one per task. The store
is built in a temporary directory, every graph is checked against the merged PyTorch
model, and only then is it renamed into place. Given the repository's current version
(`training.graph.publish`), the graphs are spliced from its graphs where they can be
(`training.graph.splice`: only the changed tasks' pieces are exported); a new store
(`bert-mts-merge`, the shipped default model) is always built in full, so its bytes
depend only on the branches.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from model_store import presets, probes
from model_store.atomic import ArtifactExistsError, atomic_directory
from model_store.graph_choice import SERVED_KEY, VARIANT_METRICS_KEY
from model_store.graph_structure import check_task_depths
from model_store.manifest import (
    GRAPH_FILES,
    TOKENIZER_FILE,
    Manifest,
    StoreError,
    TaskEntry,
    load_manifest,
    write_manifest,
)
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tokenizer import EncodedBatch, PairTokenizer
from training.data.split import split_seed_of
from training.encoders.base_model import BaseModel
from training.errors import MergeError
from training.evaluate.variant_metrics import MeasureMetrics, measurer
from training.fit.branch import (
    BranchInfo,
    load_branch,
    read_branch_info,
    resolve_branch_dir,
)
from training.fit.task_model import TaskModel
from training.graph.fusion import FusionReport, expected_operators, export_graph, operator_counts
from training.graph.int8 import LayerDepths, quantize_int8
from training.graph.merged_model import INPUT_NAMES, MergedModel, output_name
from training.graph.onnx_export import OPSET, convert_fp16
from training.graph.parity_bounds import FP16_TOLERANCE, FP32_TOLERANCE, GRAPH_BUILD_KEY
from training.graph.publish_report import check_lines
from training.graph.splice import (
    LAYOUT_KEY,
    SplicePlan,
    full_layout,
    plan_splice,
    splice_graphs,
)

log = logging.getLogger(__name__)
_PROBE = {
    False: [("a gentle, funny and moving film",), ("dull .",), ("it was fine , i guess",)],
    True: [
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
        ("A man is playing a guitar.", "A dog runs across the field in the sun."),
        ("Is it going to rain tomorrow?", "Will it rain tomorrow?"),
    ],
}


@dataclass(frozen=True)
class LoadedBranch:
    model: TaskModel
    info: BranchInfo


def check_compatible(infos: Sequence[BranchInfo]) -> None:
    """One line naming the first mismatch: task twice, base, tokenizer or max length."""
    if not infos:
        return
    seen: dict[str, BranchInfo] = {}
    for info in infos:
        if info.task in seen:
            raise MergeError(
                f"two branches for task {info.task}: {seen[info.task].path} and {info.path}"
            )
        seen[info.task] = info
    first = infos[0]
    for info in infos[1:]:
        for label, key in (
            ("base models", lambda i: i.base_sha256),
            ("tokenizers", lambda i: i.meta.get("tokenizer_sha256")),
            ("max sequence lengths", lambda i: i.meta.get("max_seq_len")),
        ):
            if key(info) != key(first):
                raise MergeError(
                    f"branches from different {label}: {first.path} has {str(key(first))[:16]}, "
                    f"{info.path} has {str(key(info))[:16]}"
                )


def read_branches(paths: Sequence[Path]) -> list[BranchInfo]:
    """Each branch.json (of a version directory, or a task directory's newest), read and
    checked once; the set checked to merge (`check_compatible`) before any weight loads."""
    infos = [read_branch_info(resolve_branch_dir(path)) for path in paths]
    check_compatible(infos)
    return infos


def load_branches(infos: Sequence[BranchInfo], base: BaseModel) -> list[LoadedBranch]:
    """The branches' models on `base`, from their already read branch.json."""
    check_compatible(infos)
    return [LoadedBranch(*load_branch(info, base)) for info in infos]


def probe_batch(
    tokenizer: PairTokenizer, branches: Sequence[LoadedBranch]
) -> tuple[EncodedBatch, np.ndarray]:
    """A few rows of every task, interleaved, then each probe input asking every task
    of its shape at once, to check a graph (single- and multi-task rows) against PyTorch."""
    rows, task_sets = [], []
    for round_index in range(3):
        for task_id, branch in enumerate(branches):
            texts = _PROBE[branch.model.spec.pair][round_index]
            rows += tokenizer.encode([texts[0]], [texts[1]] if len(texts) > 1 else None)
            task_sets.append([task_id])
    for pair in (False, True):
        same_shape = [i for i, b in enumerate(branches) if b.model.spec.pair == pair]
        if same_shape:
            texts = _PROBE[pair][0]
            rows += tokenizer.encode([texts[0]], [texts[1]] if pair else None)
            task_sets.append(same_shape)
    return tokenizer.pad(rows), task_mask(task_sets, len(branches))


def reference_probes(
    tokenizer: PairTokenizer, branches: Sequence[LoadedBranch], merged: MergedModel
) -> dict:
    """The manifest's probe set: every task's fixed probe inputs and the merged PyTorch
    model's raw answers to them (`model_store.probes`), checked again at every load."""
    inputs = {b.info.task: probes.default_inputs(b.model.spec.pair) for b in branches}
    probe = probes.build_batch(
        tokenizer, [(i, inputs[b.info.task]) for i, b in enumerate(branches)]
    )
    expected = merged_outputs(merged, probe.batch, task_mask(probe.task_sets, len(branches)))
    return probes.record(inputs, expected)


def merged_outputs(
    model: MergedModel, batch: EncodedBatch, mask: np.ndarray
) -> dict[str, np.ndarray]:
    inputs = [
        torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    ]
    with torch.no_grad():
        outputs = model(*inputs, torch.from_numpy(mask))
    return {name: out.numpy() for name, out in zip(model.task_names, outputs, strict=True)}


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def embedding_cosines(
    manifest: Manifest, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> dict[str, float]:
    """The lowest cosine between the graph's and PyTorch's vectors, per embedding task."""
    return {
        task.name: float((_unit(actual[task.name]) * _unit(expected[task.name])).sum(-1).min())
        for task in manifest.tasks
        if task.kind == "embedding" and task.name in expected
    }


def verify_graph(
    manifest: Manifest, variant: str, expected: dict[str, np.ndarray], batch, mask
) -> float:
    """Max |ORT - PyTorch| over all tasks; raises if over the variant's tolerance.
    Embeddings are compared as they are served, L2-normalised (their raw scale is the
    hidden state's, which fp16 rounds in absolute terms); `embedding_cosines` states
    their agreement as cosines."""
    session = MultiTaskSession(manifest, variant, providers=[CPU])
    actual = session.run(batch, mask)
    embedding = {t.name for t in manifest.tasks if t.kind == "embedding"}
    worst = max(
        float(np.abs(_unit(actual[t]) - _unit(expected[t])).max())
        if t in embedding
        else float(np.abs(actual[t] - expected[t]).max())
        for t in expected
    )
    if embedding:
        cosines = manifest.extra.setdefault("embedding_cosine", {})
        cosines[variant] = {
            k: f"{v:.6f}" for k, v in embedding_cosines(manifest, actual, expected).items()
        }
    tolerance = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE}.get(variant)
    if not np.isfinite(worst) or (tolerance is not None and worst > tolerance):
        raise MergeError(
            f"{variant} graph differs from PyTorch by {worst:.3g} (tolerance {tolerance})"
        )
    return worst


def check_probes(manifest: Manifest, tokenizer: PairTokenizer, variant: str) -> dict[str, float]:
    """The load-time probe check, at publish: a store that would be refused at start-up
    is never published. Per task, the difference from the recorded answers (a quantized
    variant's becomes its bound's measure on every later load). Run fp32 first: a
    quantized variant's miss then means quantization moved the answers, not the wiring."""
    session = MultiTaskSession(manifest, variant, providers=[CPU])
    try:
        return probes.check(manifest, tokenizer, session.run, variant)
    except probes.QuantizationDrift as err:
        raise MergeError(
            f"{err}, more than this variant may drift (the fp32 graph reproduces them): "
            f"publish without the {variant} variant, or quantize otherwise"
        ) from err
    except StoreError as err:
        raise MergeError(str(err)) from err


_RECIPE_KEYS = ("epochs", "batch_size", "lr", "head_lr", "warmup", "pair_order", "train_examples")


def validation_entry(info: BranchInfo) -> dict:
    """The branch's validation result, plus how its split was drawn, so that the
    published graphs can be scored on the very same validation examples, and the recipe
    that trained it, so reports can say how each task was tuned."""
    validation = {k: v for k, v in info.meta.get("validation", {}).items() if k != "history"}
    args = info.meta.get("training_args", {})
    validation["split"] = {key: args.get(key) for key in ("val_fraction", "limit", "data")}
    validation["split"]["seed"] = split_seed_of(args)  # the split's seed, not training's
    validation["recipe"] = {key: args[key] for key in _RECIPE_KEYS if key in args}
    return validation


def input_conventions(base: BaseModel) -> dict:
    """How the graph reads its inputs, for whoever feeds it: the encoder family, whether
    token_type_ids matter (an MPNet graph takes and ignores them) and how position ids
    are made (inside the graph either way, so the service feeds the same four inputs)."""
    config = base.spec.config
    return {
        "model_type": config.model_type,
        "token_types": config.uses_token_types,
        "position_ids": config.position_ids,
    }


def build_manifest(
    directory: Path,
    name: str,
    base: BaseModel,
    tokenizer: PairTokenizer,
    branches: Sequence[LoadedBranch],
    merged: MergedModel,
    variants: Sequence[str],
    probe_set: dict | None = None,
) -> Manifest:
    tasks = tuple(
        TaskEntry(
            definition=branch.model.spec.definition,
            task_id=task_id,
            output=output_name(branch.info.task),
            branch_version=branch.info.version,
            layers=branch.info.layers,
            pooling=branch.model.pooling,
            validation=validation_entry(branch.info),
            fork_depth=branch.model.trunk_depth,
        )
        for task_id, branch in enumerate(branches)
    )
    graphs = {variant: GRAPH_FILES[variant] for variant in variants}
    return Manifest(
        directory=directory,
        name=name,
        base_model={**branches[0].info.meta["base_model"], **input_conventions(base)},
        max_seq_len=tokenizer.max_seq_len,
        num_layers=merged.num_layers,
        trunk_layers=merged.trunk_depth,
        input_names=INPUT_NAMES,
        tasks=tasks,
        graphs=graphs,
        files={file: "" for file in (*graphs.values(), TOKENIZER_FILE)},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        extra={
            "opset": OPSET,
            "parity": {},
            **({probes.PROBES_KEY: probe_set} if probe_set else {}),
        },
    )


def _task_records(branches: Sequence[LoadedBranch]) -> list[dict]:
    return [
        {
            "name": b.info.task,
            "branch_version": b.info.version,
            "pooling": b.model.pooling,
            "layers": b.info.layers,
        }
        for b in branches
    ]


def write_graphs(
    merged: MergedModel,
    staging: Path,
    variants: Sequence[str],
    fuse: bool,
    plan: SplicePlan | str,
) -> tuple[FusionReport, dict | None, str]:
    """Every variant's graph in `staging`: spliced into the previous version's when
    `plan` is a SplicePlan (`training.graph.splice`), else built in full (`plan` says
    why). Returns the fusion report, the layout to record and one line saying how."""
    if isinstance(plan, SplicePlan):
        layout = splice_graphs(plan, merged, staging, variants)
        counts = operator_counts(staging / GRAPH_FILES["fp32"])
        expected = expected_operators(merged)
        fusion = FusionReport(True, {op: counts.get(op, 0) for op in expected}, expected)
        return fusion, layout, f"graphs {plan.describe()}"
    fusion = export_graph(merged, staging / GRAPH_FILES["fp32"], fuse)
    if "int8" in variants:
        depths = LayerDepths(
            merged.num_layers, dict(zip(merged.task_names, merged.fork_depths, strict=True))
        )
        quantize_int8(staging / GRAPH_FILES["fp32"], staging / GRAPH_FILES["int8"], depths)
    if "fp16" in variants:
        convert_fp16(staging / GRAPH_FILES["fp32"], staging / GRAPH_FILES["fp16"])
    layout = full_layout(merged) if fusion.fused else None
    return fusion, layout, f"graphs built in full ({plan})"


def _out_of_space(err: BaseException) -> bool:
    """A full disk or an exhausted quota, anywhere in the chain of causes."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def publish_store(
    base: BaseModel,
    branches: Sequence[LoadedBranch],
    out: Path,
    variants: Sequence[str] = ("fp32", "int8"),
    replace: bool = False,
    fuse: bool = True,
    metrics: MeasureMetrics | None = None,
    previous: Manifest | None = None,
    served: Callable[[Manifest], dict] | None = None,
) -> Manifest:
    """Build, verify and atomically publish a store directory at `out`.

    The fp32 graph is fused (`training.graph.fusion`) before the other variants are
    derived from it, unless `fuse` is false. With `previous` (the repository's current
    version), the graphs are spliced from its graphs when it allows
    (`training.graph.splice`: only the changed tasks' pieces are exported), else built
    in full; a spliced graph that fails the check against PyTorch is rebuilt in full.
    The manifest's `graph_build` says which. `metrics` makes the manifest's per-variant
    validation metrics from the staged store; by default they are measured on the data
    the branches recorded (`training.evaluate.variant_metrics`). `served` decides, from
    the measured manifest, the graph choice to record (`training.graph.graph_policy`;
    it raises to refuse the store, which then leaves nothing behind).
    """
    if "fp32" not in variants:
        raise MergeError("the fp32 graph is always built: the other variants derive from it")
    if out.exists() and not replace:
        raise ArtifactExistsError(f"{out} already exists (use --replace to swap it out)")
    try:
        presets.check_presets(branch.model.spec.definition for branch in branches)
    except presets.DefinitionError as err:
        raise MergeError(str(err)) from err
    max_seq_len = int(branches[0].info.meta.get("max_seq_len", 128))
    tokenizer = PairTokenizer.from_dir(base.path, max_seq_len)
    if tokenizer.sha256 != branches[0].info.meta.get("tokenizer_sha256", tokenizer.sha256):
        raise MergeError(
            f"the branches were trained with another tokenizer than {tokenizer.source}"
        )
    merged = MergedModel(base.encoder, [branch.model for branch in branches])
    batch, mask = probe_batch(tokenizer, branches)
    expected = merged_outputs(merged, batch, mask)
    probe_set = reference_probes(tokenizer, branches, merged)
    base_model = {**branches[0].info.meta["base_model"], **input_conventions(base)}
    plan = plan_splice(
        previous, merged, _task_records(branches), variants, fuse, base_model, max_seq_len
    )
    with atomic_directory(out, replace=replace) as staging:

        def stage(how: SplicePlan | str) -> Manifest:
            fusion, layout, build = write_graphs(merged, staging, variants, fuse, how)
            tokenizer.save(staging / TOKENIZER_FILE)
            manifest = build_manifest(
                staging, out.name, base, tokenizer, branches, merged, variants, probe_set
            )
            manifest.extra["fusion"] = fusion.to_json()
            manifest.extra[GRAPH_BUILD_KEY] = build
            if layout:
                manifest.extra[LAYOUT_KEY] = layout
            write_manifest(manifest)
            manifest = load_manifest(staging)
            parity = {v: verify_graph(manifest, v, expected, batch, mask) for v in variants}
            manifest.extra["parity"] = {v: f"{d:.3g}" for v, d in parity.items()}
            ordered = sorted(variants, key=lambda v: v != "fp32")
            drift = {v: check_probes(manifest, tokenizer, v) for v in ordered}
            for variant in variants:  # the load-time check of K and fork depths, at publish
                try:
                    check_task_depths(manifest, variant)
                except StoreError as err:
                    raise MergeError(str(err)) from err
            recorded = manifest.extra[probes.PROBES_KEY]
            recorded["drift"] = {v: f"{probes.worst(d):.3g}" for v, d in drift.items()}
            recorded[probes.MEASURED_KEY] = {
                v: {task: float(f"{value:.4g}") for task, value in d.items()}
                for v, d in drift.items()
                if v != "fp32"
            }
            return manifest

        try:
            manifest = stage(plan)
        except Exception as err:  # a splice's flaw, whatever it raises: build in full
            if not isinstance(plan, SplicePlan) or _out_of_space(err):
                raise  # a full build needs more room than the splice that ran out of it
            log.warning("splicing into %s failed (%s): building in full", previous.name, err)
            manifest = stage(f"splicing into {previous.name}'s graphs failed: {err}")
        manifest.extra[VARIANT_METRICS_KEY] = (metrics or measurer())(manifest)
        try:  # a pooling or kind the weights were not trained with scores otherwise
            presets.check_metrics(
                ((t.name, t.validation) for t in manifest.tasks),
                manifest.extra[VARIANT_METRICS_KEY],
            )
        except presets.DefinitionError as err:
            raise MergeError(str(err)) from err
        if served is not None:
            manifest.extra[SERVED_KEY] = served(manifest)
        write_manifest(manifest)
        log.info("%s", "\n".join(check_lines(manifest)))
    return load_manifest(out)
