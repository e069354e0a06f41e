"""Write the HTML accuracy report (docs/report/) of a store.

    bert-mts-report --store models/default --data-dir ../shared/data
    bert-mts-report --data-dir ../shared/data --compare-model small   # beside the default

`--compare-model NAME` (repeatable) adds a shipped model of models/shipped/catalogue.json,
from its built repository (`make model MODEL=NAME`) and the sweep file the catalogue
names for it.

What it shows, and how: `training.report.page`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.catalogue import load_catalogue
from model_store.locations import default_store, model_repository, shipped_dir
from training.commands.cli import OneLineArgumentParser, UsageError, run_cli
from training.report.page import ModelSource, write_report

PROG = "bert-mts-report"


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description="Write the HTML accuracy report.")
    parser.add_argument("--store", type=Path, default=default_store())
    parser.add_argument(
        "--data-dir", type=Path, help="look the recorded data files up here, by file name"
    )
    parser.add_argument("--sweep", type=Path, default=Path("docs/report/k_sweep.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/report"))
    parser.add_argument("--variants", nargs="+", help="graphs to score (default: fp32, int8)")
    parser.add_argument(
        "--compare-model",
        action="append",
        default=[],
        metavar="NAME",
        help="a shipped model to show beside the store (its repository and sweep file)",
    )
    args = parser.parse_args(argv)
    for path, what in ((args.store, "store"), (args.data_dir, "data directory")):
        if path is not None and not path.exists():
            raise UsageError(f"{what} {path} does not exist")
    name, compare = args.store.name, []
    if args.compare_model:
        catalogue = load_catalogue(shipped_dir())
        if args.store == default_store():
            name = catalogue.default
        for model in map(catalogue.resolve, args.compare_model):
            store = model_repository(model.name)
            if not store.exists():
                raise UsageError(
                    f"{store} does not exist: build it with make model MODEL={model.name}"
                )
            compare.append(ModelSource(model.name, store, model.sweep))
    index = write_report(
        args.store, args.data_dir, args.sweep, args.out, args.variants, compare, name
    )
    print(f"wrote {index}")
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-report`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
