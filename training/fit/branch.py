"""The task-branch artifact: `<out>/<task>/<version>/{branch.safetensors, branch.json}`.

A branch holds only what training changed: the top K layers and the head. Everything
else comes from the base model, which branch.json identifies by the sha256 of its
weights, so a branch can be re-attached to its base (evaluation, merging) and refused
with any other. Versions are never overwritten: each training run writes a new
directory, atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save

from model_store.atomic import atomic_directory
from model_store.manifest import sha256_of
from model_store.tasks import TaskDefinition, TaskDefinitionError
from model_store.tokenizer import PairTokenizer
from training.data.presets import PRESETS
from training.data.source import DataSource
from training.encoders.base_model import BaseModel, locate_recorded_base
from training.errors import BranchError
from training.fit.objectives import task_spec
from training.fit.task_model import TaskModel
from training.fit.weight_codec import decode_weights

BRANCH_WEIGHTS = "branch.safetensors"
BRANCH_META = "branch.json"
# 2: the task's definition is recorded ("definition"). Format 1 branches could only be
# of a preset task, so they are read with the preset's definition.
BRANCH_FORMAT_VERSION = 2
_READABLE_FORMATS = (1, 2)


@dataclass(frozen=True)
class BranchInfo:
    """branch.json, parsed: what a branch is and what it needs to run."""

    path: Path
    meta: dict[str, Any]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def definition(self) -> TaskDefinition:
        return TaskDefinition.from_json(self.meta["definition"])

    @property
    def layers(self) -> int:
        return int(self.meta["layers"])

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def base_sha256(self) -> str:
        return self.meta["base_model"]["sha256"]

    def locate_base(self) -> str | None:
        """Its base on this machine (as `load_base_model` takes it), found by the name and
        weights' hash branch.json records: what commands default to without --base-model."""
        return locate_recorded_base(self.meta["base_model"], str(self.path))


def branch_megabytes(path: Path) -> float:
    """What a saved branch takes on disk, in MB (10^6): its K layers in float32 (a K=8
    branch of the 12-layer base is over 200 MB), so a run says it."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 1e6


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def save_branch(
    model: TaskModel,
    base: BaseModel,
    tokenizer: PairTokenizer,
    out_dir: str | Path,
    validation: dict[str, Any],
    training_args: dict[str, Any],
) -> Path:
    """Write a new version of the branch under `out_dir/<task>/` and return its path.

    The version id is the UTC creation time plus a prefix of the weights' hash: sortable,
    and two different branches never share one.
    """
    now = datetime.now(timezone.utc)
    state = {key: tensor.detach().contiguous() for key, tensor in model.branch_state().items()}
    weights = save(state)
    weights_hash = hashlib.sha256(weights).hexdigest()
    version = f"{_timestamp(now)}-{weights_hash[:8]}"
    final = Path(out_dir) / model.spec.name / version
    if final.is_dir():
        # Same second, same weights hash: this very branch was saved already (e.g. a
        # deterministic re-run). Keep the first copy rather than fail.
        return final
    with atomic_directory(final) as staging:
        (staging / BRANCH_WEIGHTS).write_bytes(weights)
        meta = {
            "format_version": BRANCH_FORMAT_VERSION,
            "task": model.spec.name,
            "definition": model.spec.definition.to_json(),
            "layers": model.branch_depth,
            "first_layer": model.first_branch_layer,
            "pooling": model.pooling,
            "base_model": {
                "name": base.name,
                "sha256": base.weights_sha256,
                "num_layers": base.spec.num_layers,
                "hidden_size": base.spec.config.hidden_size,
            },
            "tokenizer_sha256": tokenizer.sha256,
            "max_seq_len": tokenizer.max_seq_len,
            "weights_sha256": weights_hash,
            "validation": validation,
            "training_args": training_args,
            "version": version,
            "created": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        (staging / BRANCH_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return final


def _from_format_1(meta: dict[str, Any]) -> dict[str, Any]:
    """A format 1 branch, read as format 2: it was trained on a preset, from the preset's
    file and columns (malformed rows skipped, as the loader of that time did)."""
    preset = PRESETS[meta["task"]]
    args = dict(meta.get("training_args", {}))
    if "train_file" in args and "data" not in args:
        source = DataSource(Path(args["train_file"]), preset.data.columns, skip_bad_rows=True)
        args["data"] = source.to_json()
    return {**meta, "definition": preset.definition.to_json(), "training_args": args}


def read_branch_info(path: str | Path) -> BranchInfo:
    """Parse and sanity-check branch.json without loading any weights."""
    path = Path(path)
    meta_path = path / BRANCH_META
    if not path.is_dir():
        raise BranchError(f"branch directory {path} does not exist")
    if not meta_path.is_file() or not (path / BRANCH_WEIGHTS).is_file():
        raise BranchError(f"{path} is not a branch: it needs {BRANCH_META} and {BRANCH_WEIGHTS}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BranchError(f"{meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format_version") not in _READABLE_FORMATS:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise BranchError(
            f"{meta_path}: format_version {found!r} is not supported "
            f"(expected one of {', '.join(map(str, _READABLE_FORMATS))})"
        )
    missing = [
        key for key in ("task", "layers", "pooling", "base_model", "version") if key not in meta
    ]
    if missing:
        raise BranchError(f"{meta_path} lacks {', '.join(missing)}")
    if meta["format_version"] == 1:
        if meta["task"] not in PRESETS:
            raise BranchError(f"{meta_path}: format 1 branch of unknown task {meta['task']!r}")
        meta = _from_format_1(meta)
    try:
        definition = TaskDefinition.from_json(meta.get("definition"))
    except TaskDefinitionError as err:
        raise BranchError(f"{meta_path}: {err}") from err
    if definition.name != meta["task"]:
        raise BranchError(
            f"{meta_path}: task {meta['task']!r} has the definition of {definition.name!r}"
        )
    return BranchInfo(path=path, meta=meta)


def load_branch(branch: str | Path | BranchInfo, base: BaseModel) -> tuple[TaskModel, BranchInfo]:
    """Rebuild the single-task model of a branch on its base, refusing a different base;
    `branch` is its directory, or its branch.json already read (`read_branch_info`)."""
    info = branch if isinstance(branch, BranchInfo) else read_branch_info(branch)
    if info.base_sha256 != base.weights_sha256:
        raise BranchError(
            f"{info.path} was trained on base {info.meta['base_model'].get('name')!r} "
            f"(sha256 {info.base_sha256[:12]}…), not on {base.name!r} "
            f"(sha256 {base.weights_sha256[:12]}…): pass the matching --base-model"
        )
    model = TaskModel(base.encoder, task_spec(info.definition), info.layers, info.meta["pooling"])
    weights = info.path / BRANCH_WEIGHTS
    digest = sha256_of(weights)
    if info.meta.get("weights_sha256") not in (None, digest):
        raise BranchError(f"{weights} does not match the sha256 in {BRANCH_META}: corrupt branch")
    try:
        state = decode_weights(load_file(str(weights)), info.meta.get("weights_encoding"))
        model.load_branch_state(state)
    except (RuntimeError, ValueError) as err:
        raise BranchError(f"{weights} does not fit its {BRANCH_META}: {err}") from err
    model.eval()
    return model, info


def resolve_branch_dir(path: str | Path) -> Path:
    """Accept a version directory, or a task directory meaning its newest version."""
    path = Path(path)
    if (path / BRANCH_META).is_file() or not path.is_dir():
        return path
    versions = sorted(p for p in path.iterdir() if (p / BRANCH_META).is_file())
    if not versions:
        raise BranchError(f"{path} holds no branch versions")
    return versions[-1]
