"""The model store format: `model_store/<name>/manifest.json` beside its files.

A store directory is one servable multi-task model:

    manifest.json     what is in it (this module is the one reader and writer)
    model.onnx        the merged graph, fp32 (always present)
    model.int8.onnx   optional: dynamic int8 quantization, for CPUs
    model.fp16.onnx   optional: fp16 weights and compute, for GPUs
    tokenizer.json    the tokenizer every task was trained with

The manifest lists every file with its sha256; `load_manifest` checks them all, so a
truncated copy or a swapped file is a clear error naming the file, not a crash deep
inside ONNX Runtime. Nothing here needs torch: the service reads stores with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
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
    """One task of a store: how to call it and how to read its output."""

    name: str
    task_id: int
    kind: str  # "classification" | "binary" | "regression"
    pair: bool  # takes a sentence pair (cross-encoded) rather than one sentence
    output: str  # graph output name
    label_names: tuple[str, ...]
    branch_version: str
    layers: int
    pooling: str
    validation: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task_id": self.task_id,
            "kind": self.kind,
            "pair": self.pair,
            "output": self.output,
            "label_names": list(self.label_names),
            "branch_version": self.branch_version,
            "layers": self.layers,
            "pooling": self.pooling,
            "validation": self.validation,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskEntry:
        return cls(
            name=raw["name"],
            task_id=int(raw["task_id"]),
            kind=raw["kind"],
            pair=bool(raw["pair"]),
            output=raw["output"],
            label_names=tuple(raw["label_names"]),
            branch_version=raw["branch_version"],
            layers=int(raw["layers"]),
            pooling=raw["pooling"],
            validation=dict(raw.get("validation", {})),
        )


@dataclass(frozen=True)
class Manifest:
    """manifest.json, parsed; `directory` is where it was read from (or will live)."""

    directory: Path
    name: str
    base_model: dict[str, Any]
    max_seq_len: int
    trunk_layers: int
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
    def tokenizer_path(self) -> Path:
        return self.directory / TOKENIZER_FILE

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created": self.created,
            "base_model": self.base_model,
            "max_seq_len": self.max_seq_len,
            "trunk_layers": self.trunk_layers,
            "input_names": list(self.input_names),
            "tasks": [task.to_json() for task in self.tasks],
            "graphs": self.graphs,
            "files": self.files,
            **self.extra,
        }


def write_manifest(manifest: Manifest) -> Path:
    """Hash every listed file as it is now and write manifest.json beside them."""
    files = {name: sha256_of(manifest.directory / name) for name in sorted(manifest.files)}
    payload = manifest.to_json() | {"files": files}
    path = manifest.directory / MANIFEST_FILE
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


_REQUIRED = ("name", "base_model", "max_seq_len", "trunk_layers", "input_names", "tasks", "graphs")


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
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else None
        raise StoreError(
            f"{path}: format_version {found!r} is not supported (expected {FORMAT_VERSION})"
        )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise StoreError(f"{path} lacks {', '.join(missing)}")
    try:
        manifest = Manifest(
            directory=directory,
            name=raw["name"],
            base_model=dict(raw["base_model"]),
            max_seq_len=int(raw["max_seq_len"]),
            trunk_layers=int(raw["trunk_layers"]),
            input_names=tuple(raw["input_names"]),
            tasks=tuple(TaskEntry.from_json(task) for task in raw["tasks"]),
            graphs=dict(raw["graphs"]),
            files=dict(raw.get("files", {})),
            created=raw.get("created", ""),
            extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
        )
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"{path} is malformed: {err!r}") from err
    needed = {*manifest.graphs.values(), TOKENIZER_FILE}
    unlisted = sorted(needed - set(manifest.files))
    if unlisted:
        raise StoreError(f"{path} does not list a sha256 for {', '.join(unlisted)}")
    if verify:
        verify_files(manifest)
    return manifest


_KNOWN_KEYS = {"format_version", *_REQUIRED, "files", "created"}


def verify_files(manifest: Manifest) -> None:
    """Every listed file exists and has the recorded sha256."""
    for name, expected in manifest.files.items():
        file = manifest.directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise StoreError(
                f"{manifest.directory}: manifest names a file outside the store: {name}"
            )
        if not file.is_file():
            raise StoreError(f"{file} is missing (listed in {MANIFEST_FILE})")
        actual = sha256_of(file)
        if actual != expected:
            raise StoreError(
                f"{file} is corrupt: sha256 {actual[:12]}… does not match the manifest's "
                f"{expected[:12]}…"
            )
