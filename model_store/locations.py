"""Where the project's artifacts live: one folder of models beside the code, by default.

    models/shipped/    the shipped models' branches and SHA256SUMS, one folder per model,
                       and catalogue.json naming them and the default (in git)
    models/default/    the servable repository of the default model (`make model`)
    models/<name>/     the servable repository of any other shipped model
                       (`make model MODEL=<name>`)
    models/branches/   what training writes unless told `--out`

The folder is `models/` under the working directory, or `$BERT_MTS_MODELS_DIR`; every
command also takes its paths as options. Nothing here looks at where the code is
installed: an installed package never holds artifacts. Torch-free: the service's
default model directory comes from here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from model_store.catalogue import DEFAULT_ALIAS, load_catalogue

MODELS_ENV = "BERT_MTS_MODELS_DIR"
SHIPPED = "shipped"
DEFAULT = "default"
BRANCHES = "branches"
# Where releases before the models/ folder built the default repository.
LEGACY_DEFAULT_STORE = Path("model_store") / DEFAULT


def models_dir() -> Path:
    """`$BERT_MTS_MODELS_DIR`, else `models` (relative to the working directory)."""
    return Path(os.environ.get(MODELS_ENV) or "models")


def shipped_dir() -> Path:
    return models_dir() / SHIPPED


def default_store() -> Path:
    return models_dir() / DEFAULT


def model_repository(name: str | None = None, shipped: Path | None = None) -> Path:
    """The repository directory of shipped model `name`: `models/default` for the
    catalogue's default (None or "default" too, without reading the catalogue), else
    `models/<name>`. An unknown name is a `CatalogueError` listing the known ones.

    The one answer to "where is model X served from": the Makefile (through
    `bert-mts-default-model dir`), the build command, training's `--store` and the
    service's `--model-dir` defaults all ask here.
    """
    if name is None or name == DEFAULT_ALIAS:
        return default_store()
    catalogue = load_catalogue(shipped or shipped_dir())
    model = catalogue.resolve(name)
    return default_store() if catalogue.is_default(model) else models_dir() / model.name


def branches_dir() -> Path:
    return models_dir() / BRANCHES


def moved_store_hint(path: Path) -> str:
    """A one-line hint when `path` is missing but a default repository still sits at
    its old place, else ""."""
    if path.exists() or not (LEGACY_DEFAULT_STORE / "versions").is_dir():
        return ""
    return (
        f" (the default repository moved to {default_store()}: "
        f"mv {LEGACY_DEFAULT_STORE} {default_store()}, or pass --model-dir "
        f"{LEGACY_DEFAULT_STORE})"
    )
