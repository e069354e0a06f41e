"""Which base a training run uses: the one of the model its branches are meant for.

A branch only publishes into a repository of the same base weights, tokenizer and
maximum length, so a run with no `--base-model` takes them from `--store` (default: the
default model repository) when that repository exists; a `--base-model` that
contradicts it is refused up front instead of after an hour of training. With no
repository to follow, the default is the 12-layer all-mpnet-base-v2 (the method's
regime, installed on first use), or `$BERT_MTS_BASE_MODEL`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from model_store.manifest import StoreError, load_manifest
from model_store.repository import is_repository, resolve_store
from training.encoders.base_model import (
    BaseModelSpec,
    locate_recorded_base,
    read_base_model_spec,
    weights_sha256,
)
from training.errors import BaseModelError, UsageError

DEFAULT_TRAINING_BASE = "all-mpnet-base-v2"
BASE_ENV = "BERT_MTS_BASE_MODEL"


@dataclass(frozen=True)
class StoreBase:
    """What a repository's current version says about its base."""

    store: Path
    name: str
    weights_sha256: str
    max_seq_len: int


def default_base() -> str:
    return os.environ.get(BASE_ENV) or DEFAULT_TRAINING_BASE


def read_store_base(store: Path, explicit: bool) -> StoreBase | None:
    """The base of `store`'s current version; None when the (default) store does not
    exist. A `--store` given explicitly must be a repository with a current version."""
    if not is_repository(store):
        if explicit:
            raise UsageError(
                f"--store {store} is not a model repository (no versions/): train without "
                "--store, or give the repository the branches are for"
            )
        return None
    try:
        manifest = load_manifest(resolve_store(store), verify=False)
    except StoreError as err:
        raise UsageError(f"--store {store}: {err}") from err
    return StoreBase(
        store=store,
        name=str(manifest.base_model.get("name", "")),
        weights_sha256=str(manifest.base_model.get("sha256", "")),
        max_seq_len=manifest.max_seq_len,
    )


def choose_base(
    base_model: Path | None, store: StoreBase | None
) -> tuple[str | Path | None, BaseModelSpec]:
    """The base to train on (as `load_base_model` takes it) and its spec, checked against
    the store's weights."""
    if store is None:
        chosen = base_model or default_base()
        return chosen, read_base_model_spec(chosen)
    if base_model is not None:
        spec = read_base_model_spec(base_model)
        if weights_sha256(spec.weights_file) != store.weights_sha256:
            raise UsageError(
                f"--base-model {base_model} is not the base of {store.store} ({store.name}): "
                "its branches could not be published there; drop --base-model, or pass "
                "--store for a repository of that base, or --no-store"
            )
        return base_model, spec
    try:
        chosen = locate_recorded_base(
            {"name": store.name, "sha256": store.weights_sha256}, str(store.store)
        )
    except BaseModelError as err:
        raise UsageError(str(err)) from err
    return chosen, read_base_model_spec(chosen)


def describe_choice(
    given: Path | None, spec: BaseModelSpec, store: StoreBase | None, default_store: Path | None
) -> str:
    """The line a run starts with: which base it trains, why, and which repository it
    follows (`default_store`: the repository looked for, None with --no-store)."""
    if store is not None:
        why = f"the base of {store.store}, whose branches these are"
    elif given is not None:
        why = "--base-model"
    elif os.environ.get(BASE_ENV):
        why = f"${BASE_ENV}"
    else:
        why = "the default"
    if store is not None:
        following = ""
    elif default_store is None:
        following = "; following no repository (--no-store)"
    else:
        following = f"; following no repository (none at {default_store})"
    return f"base model: {spec.name}, {spec.num_layers} layers, at {spec.path} ({why}){following}"
