"""The shipped models, as data: `models/shipped/catalogue.json` names each one.

    {"default": "base",
     "models": {"base": {"description": "...", "base_model": "all-mpnet-base-v2",
                         "sweep": "docs/report/k_sweep_base.json",
                         "variants": ["fp32", "fp16"]},
                "small": {"description": "...", "base_model": "all-minilm-l6-v2"}}}

Each named model's branches, SHA256SUMS and variant_metrics.json are in
`models/shipped/<name>/`. `default` is the one `make serve` serves, built into
`models/default`; any other model X is built into `models/X`
(`model_store.locations.model_repository`). `base_model` is the base as the training
commands take it (`--base-model`: the packaged `all-minilm-l6-v2`, an installable base's
name, or a checkpoint directory); `sweep` is the K-sweep results file the accuracy report
draws the model's K chart from (relative to the working directory; optional);
`variants` the graph variants its build makes and its SHA256SUMS pins (optional, fp32
always among them; default: all).

Why a file and not code: shipping another model, or changing which one is the default,
is a data change (new branch folders and one catalogue edit), and every consumer (the
build command, the Makefile, the report, the benchmarks) reads the same answer.
Torch-free and stdlib-only, so any command can resolve a model's name cheaply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from model_store.cli import UsageError
from model_store.manifest import GRAPH_FILES

CATALOGUE_FILE = "catalogue.json"
# `--model default` (and no --model) means the catalogue's default, whatever its name.
DEFAULT_ALIAS = "default"
# Names that would collide with the folders beside the model repositories under models/.
RESERVED_NAMES = frozenset({DEFAULT_ALIAS, "shipped", "branches"})
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class CatalogueError(UsageError):
    """A catalogue that is missing or malformed, or a model name it does not hold."""


# Every graph variant a store can hold, in the manifest's order.
ALL_VARIANTS = tuple(GRAPH_FILES)


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its name, what it is for, its base, and where its files are."""

    name: str
    description: str
    base_model: str
    branches: Path  # models/shipped/<name>: one folder per task, SHA256SUMS, metrics
    sweep: Path | None = None
    # The graph variants built for it (a model may leave one out, with its reason).
    variants: tuple[str, ...] = ALL_VARIANTS


@dataclass(frozen=True)
class Catalogue:
    path: Path
    default: str
    models: dict[str, ShippedModel]

    def resolve(self, name: str | None = None) -> ShippedModel:
        """The model called `name` (None or "default": the default model); an unknown
        name is one line that lists the known ones."""
        if name is None or name == DEFAULT_ALIAS:
            return self.models[self.default]
        if name not in self.models:
            known = ", ".join(f"{n} (default)" if n == self.default else n for n in self.models)
            raise CatalogueError(f"unknown model {name!r}; {self.path} ships: {known}")
        return self.models[name]

    def is_default(self, model: ShippedModel) -> bool:
        return model.name == self.default


def _entry(catalogue: Path, name: str, raw: object) -> ShippedModel:
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES:
        raise CatalogueError(
            f"{catalogue}: model name {name!r} must be lower-case letters, digits, - or _ "
            f"(starting with a letter), and none of {', '.join(sorted(RESERVED_NAMES))}"
        )
    if not isinstance(raw, dict) or not isinstance(raw.get("base_model"), str):
        raise CatalogueError(f"{catalogue}: model {name!r} needs a base_model (a string)")
    sweep = raw.get("sweep")
    variants = raw.get("variants", list(ALL_VARIANTS))
    if (
        not isinstance(variants, list)
        or "fp32" not in variants
        or not set(variants) <= set(ALL_VARIANTS)
        or len(set(variants)) != len(variants)
    ):
        raise CatalogueError(
            f"{catalogue}: model {name!r}: variants must list fp32 and any of "
            f"{', '.join(ALL_VARIANTS[1:])}, each once"
        )
    return ShippedModel(
        name=name,
        description=str(raw.get("description", "")),
        base_model=raw["base_model"],
        branches=catalogue.parent / name,
        sweep=Path(sweep) if isinstance(sweep, str) else None,
        variants=tuple(v for v in ALL_VARIANTS if v in variants),
    )


def load_catalogue(shipped: Path) -> Catalogue:
    """Read `shipped/catalogue.json`; anything wrong with it is one line."""
    path = shipped / CATALOGUE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"{path} is missing: no shipped models here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CatalogueError(f"{path} is unreadable: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict) or not raw["models"]:
        raise CatalogueError(f'{path} needs "models": an object of at least one model')
    models = {name: _entry(path, name, entry) for name, entry in raw["models"].items()}
    default = raw.get("default")
    if default not in models:
        raise CatalogueError(
            f'{path}: "default" must name one of its models ({", ".join(models)}), not {default!r}'
        )
    return Catalogue(path=path, default=default, models=models)
