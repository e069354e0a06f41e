"""The model store format: `model_store/<name>/manifest.json` beside its files.

A store directory is one servable multi-task model:

    manifest.json     what is in it (this module is the one reader and writer)
    model.onnx        the merged graph, fp32 (always present)
    model.int8.onnx   optional: dynamic int8 quantization, for CPUs
    model.fp16.onnx   optional: fp16 weights and compute, for GPUs
    tokenizer.json    the tokenizer every task was trained with

The manifest lists every file with its sha256, and its own sha256 over the rest of
its content; `load_manifest` checks them all, so a truncated copy, a swapped file or a
hand-edited manifest is a clear error naming the file, not a crash deep inside ONNX
Runtime. Each task carries its definition (`model_store.tasks`). Nothing here needs
torch: the service reads stores with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.quoting import quoted
from model_store.tasks import TaskDefinition, TaskDefinitionError

MANIFEST_FILE = "manifest.json"
# 2: tasks carry their definition; the manifest carries its own sha256.
# 3: the graph is a tree: rows carry a task mask (`task_mask` [batch, tasks] bool, one
#    input may ask several tasks) instead of one task id, and each task its fork depth.
FORMAT_VERSION = 3
GRAPH_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
TOKENIZER_FILE = "tokenizer.json"


class StoreError(ValueError):
    """A store directory that is missing, incomplete, corrupt or of another format."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TaskEntry:
    """One task of a store: its definition, where the graph answers it, and its branch."""

    definition: TaskDefinition
    task_id: int
    output: str  # graph output name
    branch_version: str
    layers: int
    pooling: str
    validation: dict[str, Any]
    fork_depth: int  # frozen base layers below the task's branch: L - K

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def kind(self) -> str:
        return self.definition.kind

    @property
    def pair(self) -> bool:
        return self.definition.pair

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.definition.label_names

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "definition": self.definition.to_json(),
            "output": self.output,
            "branch_version": self.branch_version,
            "layers": self.layers,
            "fork_depth": self.fork_depth,
            "pooling": self.pooling,
            "validation": self.validation,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskEntry:
        return cls(
            definition=TaskDefinition.from_json(raw["definition"]),
            task_id=int(raw["task_id"]),
            output=str(raw["output"]),
            branch_version=str(raw["branch_version"]),
            layers=int(raw["layers"]),
            pooling=str(raw["pooling"]),
            validation=dict(raw.get("validation", {})),
            fork_depth=int(raw["fork_depth"]),
        )


@dataclass(frozen=True)
class Manifest:
    """manifest.json, parsed; `directory` is where it was read from (or will live)."""

    directory: Path
    name: str
    base_model: dict[str, Any]
    max_seq_len: int
    num_layers: int  # L, of the base
    trunk_layers: int  # frozen layers every task shares: the shallowest fork
    input_names: tuple[str, ...]
    tasks: tuple[TaskEntry, ...]
    graphs: dict[str, str]  # variant -> file name
    files: dict[str, str]  # file name -> sha256
    created: str
    extra: dict[str, Any]

    def task(self, name: str) -> TaskEntry:
        for entry in self.tasks:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def graph_path(self, variant: str = "fp32") -> Path:
        if variant not in self.graphs:
            raise StoreError(
                f"{self.directory} has no {variant} graph (has: {', '.join(sorted(self.graphs))})"
            )
        return self.directory / self.graphs[variant]

    @property
    def frozen_layers(self) -> int:
        """Frozen base layers the graph holds (once): up to the deepest fork."""
        return max(task.fork_depth for task in self.tasks)

    def layer_evaluations(self, names: Sequence[str]) -> int:
        """Layers one input runs to answer these tasks: the frozen layers up to the
        deepest of their forks once, then each task's own K layers. One task costs L."""
        entries = [self.task(name) for name in names]
        return max(t.fork_depth for t in entries) + sum(t.layers for t in entries)

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / TOKENIZER_FILE

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created": self.created,
            "base_model": self.base_model,
            "max_seq_len": self.max_seq_len,
            "num_layers": self.num_layers,
            "trunk_layers": self.trunk_layers,
            "frozen_layers": self.frozen_layers,
            "input_names": list(self.input_names),
            "tasks": [task.to_json() for task in self.tasks],
            "graphs": self.graphs,
            "files": self.files,
            **self.extra,
        }


SELF_HASH_KEY = "manifest_sha256"
# Far beyond any BERT-family position table; a larger value is a broken manifest, and the
# start-up smoke batch would allocate rows that long.
MAX_SEQ_LEN_LIMIT = 16384


def content_sha256(payload: dict[str, Any]) -> str:
    """sha256 of a manifest's content without its own hash, in a canonical form (sorted
    keys, no whitespace), so re-indenting the file does not change it but any edited
    value does."""
    content = {k: v for k, v in payload.items() if k != SELF_HASH_KEY}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def write_manifest(manifest: Manifest) -> Path:
    """Hash every listed file as it is now and write manifest.json beside them, with the
    manifest's own sha256."""
    files = {name: sha256_of(manifest.directory / name) for name in sorted(manifest.files)}
    payload = manifest.to_json() | {"files": files}
    payload[SELF_HASH_KEY] = content_sha256(payload)
    path = manifest.directory / MANIFEST_FILE
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


_REQUIRED = (
    "name",
    "base_model",
    "max_seq_len",
    "num_layers",
    "trunk_layers",
    "input_names",
    "tasks",
    "graphs",
)


def load_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read manifest.json and (by default) check every file against its sha256."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise StoreError(f"model directory {directory} does not exist")
    if not path.is_file():
        raise StoreError(f"{directory} has no {MANIFEST_FILE}: not a model store directory")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is not valid JSON: {err}") from err
    except RecursionError:  # hundreds of thousands of nested brackets: not a manifest
        raise StoreError(f"{path} is not a manifest: its JSON nests too deeply") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else None
        raise StoreError(
            f"{path}: format_version {quoted(found)} is not supported (expected {FORMAT_VERSION}); "
            "publish the store again from its branches with this version"
        )
    missing = [key for key in (*_REQUIRED, SELF_HASH_KEY) if key not in raw]
    if missing:
        raise StoreError(f"{path} lacks {', '.join(missing)}")
    if verify and raw[SELF_HASH_KEY] != content_sha256(raw):
        raise StoreError(
            f"{path} was changed after it was published: its content does not match its "
            f"{SELF_HASH_KEY} (publish a new version instead of editing one)"
        )
    try:
        manifest = Manifest(
            directory=directory,
            name=raw["name"],
            base_model=dict(raw["base_model"]),
            max_seq_len=int(raw["max_seq_len"]),
            num_layers=int(raw["num_layers"]),
            trunk_layers=int(raw["trunk_layers"]),
            input_names=tuple(raw["input_names"]),
            tasks=tuple(TaskEntry.from_json(task) for task in raw["tasks"]),
            graphs=dict(raw["graphs"]),
            files=dict(raw.get("files", {})),
            created=raw.get("created", ""),
            extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
        )
    except TaskDefinitionError as err:
        raise StoreError(f"{path}: {err}") from err
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as err:
        # OverflowError: a number such as 1e999 (read as infinity) where an int belongs
        raise StoreError(f"{path} is malformed: {quoted(err)}") from err
    check_tasks(manifest)
    check_listing(manifest)
    if verify:
        verify_files(manifest)
    return manifest


def check_listing(manifest: Manifest) -> None:
    """A sane maximum length; graph and file names and hashes are strings; every file
    the service opens has a sha256."""
    path = manifest.directory / MANIFEST_FILE
    if not 3 <= manifest.max_seq_len <= MAX_SEQ_LEN_LIMIT:
        raise StoreError(
            f"{path}: max_seq_len {manifest.max_seq_len} is not within 3..{MAX_SEQ_LEN_LIMIT}"
        )
    names = [*manifest.graphs.values(), *manifest.files, *manifest.files.values()]
    if not all(isinstance(name, str) for name in names):
        raise StoreError(f"{path} is malformed: graph and file names and hashes are strings")
    needed = {*manifest.graphs.values(), TOKENIZER_FILE}
    unlisted = sorted(needed - set(manifest.files))
    if unlisted:
        raise StoreError(f"{path} does not list a sha256 for {', '.join(unlisted)}")


_KNOWN_KEYS = {"format_version", *_REQUIRED, "frozen_layers", "files", "created", SELF_HASH_KEY}


def check_tasks(manifest: Manifest) -> None:
    """Task ids 0..n-1 in order, distinct names and outputs: what routing relies on."""
    path = manifest.directory / MANIFEST_FILE
    if not manifest.tasks:
        raise StoreError(f"{path} lists no task")
    ids = [task.task_id for task in manifest.tasks]
    if ids != list(range(len(ids))):
        raise StoreError(f"{path}: task ids must be 0..{len(ids) - 1} in order, got {ids}")
    for what, values in (
        ("task names", [task.name for task in manifest.tasks]),
        ("outputs", [task.output for task in manifest.tasks]),
    ):
        if len(set(values)) != len(values):
            raise StoreError(f"{path}: {what} must be distinct, got {', '.join(values)}")
    for task in manifest.tasks:
        if task.fork_depth != manifest.num_layers - task.layers or task.fork_depth < 0:
            raise StoreError(
                f"{path}: task {task.name} forks at layer {task.fork_depth}, but a branch of "
                f"{task.layers} layers on a {manifest.num_layers}-layer base forks at "
                f"{manifest.num_layers - task.layers}"
            )
    if manifest.trunk_layers != min(task.fork_depth for task in manifest.tasks):
        raise StoreError(f"{path}: trunk_layers is not the shallowest fork depth")


def verify_files(manifest: Manifest) -> None:
    """Every listed file exists, inside the store, and has the recorded sha256. A file
    that is a symbolic link is refused whatever it points to: a version is immutable only
    if its bytes are its own (hard links to an earlier version's identical files are
    the same bytes; a symbolic link can be re-pointed after publishing)."""
    for name, expected in manifest.files.items():
        file = manifest.directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise StoreError(
                f"{manifest.directory}: manifest names a file outside the store: {quoted(name)}"
            )
        steps = Path(name).parts
        if any(
            (manifest.directory.joinpath(*steps[: n + 1])).is_symlink() for n in range(len(steps))
        ):
            raise StoreError(
                f"{file} is a symbolic link: a store's files must be its own (publish again)"
            )
        if not file.is_file():
            raise StoreError(f"{file} is missing (listed in {MANIFEST_FILE})")
        actual = sha256_of(file)
        if actual != expected:
            raise StoreError(
                f"{file} is corrupt: sha256 {actual[:12]}… does not match the manifest's "
                f"{expected[:12]}…"
            )
