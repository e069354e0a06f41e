"""Merge task branches into one tree-shaped graph and publish it as a model store.

    bert-mts-merge --branch models/branches/sentiment --branch models/branches/paraphrase \\
        --branch models/branches/similarity --out models/mymodel

A `--branch` is a version directory or a task directory (meaning its newest version).
The work is `training.graph.merge.publish_store`, which also refuses an existing
`--out` (without `--replace`) before it exports anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.manifest import GRAPH_FILES
from training.commands.cli import OneLineArgumentParser, run_cli
from training.encoders.base_model import load_base_model
from training.evaluate.variant_metrics import measurer
from training.graph.merge import load_branches, publish_store, read_branches

PROG = "merge"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Merge task branches into a model store.")
    parser.add_argument(
        "--branch", required=True, action="append", type=Path, help="repeat per task"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="store directory, e.g. models/default"
    )
    parser.add_argument("--base-model", type=Path, metavar="PATH", help="default: all-MiniLM-L6-v2")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(GRAPH_FILES),
        default=["fp32", "int8"],
        help="graphs to build (fp32 always)",
    )
    parser.add_argument("--replace", action="store_true", help="replace an existing store")
    parser.add_argument(
        "--no-fuse", action="store_true", help="skip ONNX Runtime's transformer fusions"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="look the branches' recorded data files up here, by name"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    variants = list(dict.fromkeys(["fp32", *args.variants]))
    infos = read_branches(args.branch)
    base = load_base_model(args.base_model)
    branches = load_branches(infos, base)
    manifest = publish_store(
        base,
        branches,
        args.out,
        variants,
        replace=args.replace,
        fuse=not args.no_fuse,
        metrics=measurer(args.data_dir),
    )
    tasks = ", ".join(f"{t.name} (K={t.layers}, fork {t.fork_depth})" for t in manifest.tasks)
    print(
        f"published {manifest.directory}: {tasks}; frozen layers {manifest.frozen_layers} "
        f"(shared by all tasks: {manifest.trunk_layers}); graphs {', '.join(manifest.graphs)}"
    )
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-merge`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
