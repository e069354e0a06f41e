"""Score every task of a published store on its validation split, per graph variant.

    bert-mts-evaluate-store --store models/default [--data-dir ../shared/data]

How the examples are drawn: `training.evaluate.store`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from training.commands.cli import OneLineArgumentParser, UsageError, run_cli
from training.evaluate.store import evaluate_store

PROG = "bert-mts-evaluate-store"


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description="Validation metrics of a store's graphs.")
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument(
        "--data-dir", type=Path, help="look the recorded data files up here, by file name"
    )
    parser.add_argument("--variants", nargs="+", help="default: every graph in the store")
    args = parser.parse_args(argv)
    manifest = load_manifest(resolve_store(args.store))  # a repository: its current version
    variants = args.variants or list(manifest.graphs)
    unknown = [v for v in variants if v not in manifest.graphs]
    if unknown:
        raise UsageError(f"{args.store} has no {', '.join(unknown)} graph")
    print(json.dumps(evaluate_store(manifest, args.data_dir, variants), indent=2))
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-evaluate-store`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
