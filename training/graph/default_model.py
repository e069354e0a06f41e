"""The shipped models: committed compact branches, built into servable stores.

    bert-mts-default-model build                  # the default model into models/default, once
    bert-mts-default-model build --model small    # another shipped model, into models/small
    bert-mts-default-model pack --model small --branch runs/tune/sentiment   # ship a branch
    bert-mts-default-model build --model small --record --data-dir ../shared/data   # checksums

(the command is `training.commands.default_model`; which models ship, their bases and
the default are `models/shipped/catalogue.json` (`model_store.catalogue`); the folders
are `model_store.locations`'). Everything here works on one model's folder,
`models/shipped/<name>/`, and the base the catalogue names for it.

Git holds only what training produced: each task's tuned top layers and head, with
int8 row-wise weight matrices (`models/shipped/<name>/<task>/<version>/`, see
`training.fit.weight_codec`). Everything else is derived. The trunk comes
from the model's base (the pinned base-model package, or a base installed from the
registry by `training.encoders.bases`, sha256-checked), whose weights sha256 every
branch records and checks; the ONNX graphs are exported from the branches
deterministically (pinned torch, onnx and onnxruntime), and the build is refused
unless every built file matches the sha256 committed in
`models/shipped/<name>/SHA256SUMS`. So a fresh clone serves exactly the model that was
evaluated, and a corrupted or tampered file is caught, not served.
The store is written next to its final place and renamed in only when verified.

Recording also measures every graph variant's validation metric per task (which needs
the training data) and commits them next to the checksums
(`models/shipped/<name>/variant_metrics.json`); a build, which must work without the data,
copies them into the manifest, where `--graph auto` reads them to pick the graph.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file, save

from model_store.atomic import atomic_directory, atomic_write_text
from model_store.catalogue import ALL_VARIANTS
from model_store.hints import script_command
from model_store.manifest import GRAPH_FILES, TOKENIZER_FILE
from model_store.operations import BranchRef, keep_branch
from model_store.repository import VERSIONS_DIR, new_version_id, set_current
from training.data.presets import preset_order
from training.encoders.base_model import BaseModel, load_base_model
from training.errors import ChecksumError, UsageError
from training.evaluate.variant_metrics import (
    MeasureMetrics,
    measurer,
    read_metrics,
    recordable,
    recorded,
    write_metrics,
)
from training.fit.branch import (
    BRANCH_META,
    BRANCH_WEIGHTS,
    read_branch_info,
    resolve_branch_dir,
)
from training.fit.weight_codec import INT8_ROWWISE, encode_int8_rowwise
from training.graph.merge import LoadedBranch, load_branches, publish_store, read_branches

__all__ = ["ChecksumError", "build", "pack_branch", "ship_embedding"]

CHECKSUMS = "SHA256SUMS"
VARIANT_METRICS = "variant_metrics.json"
VARIANTS = ALL_VARIANTS


def checked_files(variants: Sequence[str]) -> tuple[str, ...]:
    """The files SHA256SUMS pins: each built graph variant's, and the tokenizer."""
    return (*(GRAPH_FILES[v] for v in VARIANTS if v in variants), TOKENIZER_FILE)


def shipped_branch_dirs(shipped: Path) -> list[Path]:
    """The one committed version per shipped task, presets first (the merge order is
    part of what the checksums pin)."""
    tasks = [path.name for path in shipped.iterdir() if path.is_dir()] if shipped.is_dir() else []
    if not tasks:
        raise UsageError(f"{shipped} holds no shipped branch")
    return [resolve_branch_dir(shipped / task) for task in preset_order(tasks)]


def read_checksums(path: Path) -> dict[str, str]:
    """`sha256sum` format: '<hex>  <file name>' per line."""
    if not path.is_file():
        command = script_command("bert-mts-default-model", "build", "--record")
        raise UsageError(f"{path} is missing: run `{command}`")
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums


def write_checksums(path: Path, files: dict[str, str]) -> None:
    atomic_write_text(path, "".join(f"{digest}  {name}\n" for name, digest in files.items()))


def verify_checksums(built: dict[str, str], expected: dict[str, str]) -> None:
    for name in sorted(set(built) | set(expected)):
        if built.get(name) != expected.get(name):
            raise ChecksumError(
                f"built {name} has sha256 {built.get(name, '?')[:12]}…, the shipped "
                f"{CHECKSUMS} says {expected.get(name, '?')[:12]}…: this build does not "
                "reproduce the released model (are torch, onnx and onnxruntime the versions "
                "pinned in pyproject.toml?)"
            )


def _publish_version(
    repository: Path,
    base: BaseModel,
    branches: list[LoadedBranch],
    metrics: MeasureMetrics,
    variants: Sequence[str] = VARIANTS,
) -> tuple[str, dict[str, str], dict]:
    """A new version of `variants` under `repository`: its id, checked files' hashes
    and per-variant validation metrics."""
    version = new_version_id()
    manifest = publish_store(
        base, branches, repository / VERSIONS_DIR / version, variants, metrics=metrics
    )
    files = {name: manifest.files[name] for name in checked_files(variants)}
    return version, files, manifest.extra["variant_metrics"]


def build(
    shipped: Path,
    out: Path,
    record: bool = False,
    data_dir: Path | None = None,
    base_model: str | Path | None = None,
    variants: Sequence[str] = VARIANTS,
) -> tuple[Path, dict[str, str]]:
    """Merge the shipped branches of one model (`shipped`: its folder) on `base_model`
    (as `load_base_model` takes it; None: the packaged small base) into a model
    repository at `out`, verified by hash.

    With `record`, write the built files' hashes to the shipped SHA256SUMS instead of
    checking them (after deliberately shipping new branches), and every variant's
    validation metrics (measured on the branches' data, looked up in `data_dir`) to
    variant_metrics.json beside them; build nothing at `out`.
    """
    if not record and out.exists():
        raise UsageError(f"{out} already exists: remove it to rebuild")
    expected = None if record else read_checksums(shipped / CHECKSUMS)
    base = load_base_model(base_model)
    branches = load_branches(read_branches(shipped_branch_dirs(shipped)), base)
    if record:
        with tempfile.TemporaryDirectory() as scratch:
            _, files, metrics = _publish_version(
                Path(scratch), base, branches, measurer(data_dir), variants
            )
        if "unavailable" in metrics:
            raise UsageError(
                f"recording needs the branches' validation data: {metrics['unavailable']} "
                "(point --data-dir at it)"
            )
        write_metrics(shipped / VARIANT_METRICS, recordable(metrics))
        write_checksums(shipped / CHECKSUMS, files)
        return shipped / CHECKSUMS, files
    source = f"recorded with the shipped checksums ({VARIANT_METRICS})"
    shipped_metrics = recorded(read_metrics(shipped / VARIANT_METRICS), source)
    with atomic_directory(out) as staging:
        version, files, _ = _publish_version(staging, base, branches, shipped_metrics, variants)
        verify_checksums(files, expected or {})
        for branch in branches:
            info = branch.info  # later publishes re-merge the untouched tasks
            keep_branch(staging, BranchRef(info.task, info.version, info.path))
        set_current(staging, version)
    return out, files


def pack_branch(source: Path, shipped: Path, base_sha256: str | None = None) -> Path:
    """Copy a trained branch into `shipped` (one model's folder) with int8 row-wise weight
    matrices (a quarter of the bytes in git), replacing the task's previous shipped
    version. With `base_sha256` (the model's base weights), a branch trained on another
    base is refused here rather than at the next build."""
    info = read_branch_info(resolve_branch_dir(source))
    if info.meta.get("weights_encoding") not in (None, "float32"):
        raise UsageError(f"{info.path} is packed already")
    trained_on = info.meta.get("base_model", {})
    if base_sha256 is not None and trained_on.get("sha256") != base_sha256:
        raise UsageError(
            f"{info.path} was trained on {trained_on.get('name', 'another base')}, not on "
            f"the base of {shipped.name}: it cannot ship in that model"
        )
    weights = save(encode_int8_rowwise(load_file(str(info.path / BRANCH_WEIGHTS))))
    digest = hashlib.sha256(weights).hexdigest()
    meta = dict(info.meta)
    meta["version"] = f"{info.version.split('-')[0]}-{digest[:8]}"
    meta["weights_sha256"] = digest
    meta["weights_encoding"] = INT8_ROWWISE
    meta["packed_from"] = {"version": info.version, "weights_sha256": info.meta["weights_sha256"]}
    final = shipped / info.task / meta["version"]
    with atomic_directory(final) as staging:
        (staging / BRANCH_WEIGHTS).write_bytes(weights)
        (staging / BRANCH_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for other in (shipped / info.task).iterdir():
        if other != final and (other / BRANCH_META).is_file():
            shutil.rmtree(other)
    return final


def ship_embedding(shipped: Path, base_model: str | Path | None = None) -> Path:
    """Ship the embedding task of `base_model` (`training.graph.embedding`; None: the
    packaged small base) at the shipped branches' max length, replacing a previously
    shipped one."""
    from training.graph.embedding import EMBEDDING_TASK, write_embedding_branch

    lengths = {
        int(read_branch_info(path).meta.get("max_seq_len", 128))
        for path in shipped_branch_dirs(shipped)
        if path.parent.name != EMBEDDING_TASK
    }
    if len(lengths) != 1:
        raise UsageError(f"the shipped branches disagree on their max length: {sorted(lengths)}")
    previous = [p for p in (shipped / EMBEDDING_TASK).glob("*") if (p / BRANCH_META).is_file()]
    final = write_embedding_branch(load_base_model(base_model), shipped, lengths.pop())
    for other in previous:
        if other != final:
            shutil.rmtree(other)
    return final
