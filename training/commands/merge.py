"""Merge task branches into one tree-shaped graph and publish it as a model store.

    bert-mts-merge --branch models/branches/sentiment --branch models/branches/paraphrase \\
        --branch models/branches/similarity --out models/mymodel
    bert-mts-merge --branch models/branches/topic --embedding --out models/mymodel

`--embedding` adds the base's sentence embedding as task `embedding`
(`training.graph.embedding`: no tuned layers, it forks at the top of the frozen base).

A `--branch` is a version directory or a task directory (meaning its newest version).
The work is `training.graph.merge.publish_store`, which also refuses an existing
`--out` (without `--replace`) before it exports anything.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.manifest import GRAPH_FILES
from training.commands.cli import OneLineArgumentParser, UsageError, run_cli
from training.encoders.base_model import load_base_model
from training.evaluate.variant_metrics import measurer
from training.fit.branch import read_branch_info
from training.graph.embedding import DEFAULT_MAX_SEQ_LEN, temporary_embedding_branch
from training.graph.merge import check_compatible, load_branches, publish_store, read_branches

PROG = "bert-mts-merge"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Merge task branches into a model store.")
    parser.add_argument("--branch", action="append", type=Path, default=[], help="repeat per task")
    parser.add_argument(
        "--out", required=True, type=Path, help="store directory, e.g. models/default"
    )
    parser.add_argument(
        "--base-model",
        type=Path,
        metavar="PATH",
        help="default: the base the branches were trained on (all-MiniLM-L6-v2 without any)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(GRAPH_FILES),
        default=["fp32", "int8"],
        help="graphs to build (fp32 always)",
    )
    parser.add_argument(
        "--embedding",
        action="store_true",
        help="add the base's sentence embedding as task 'embedding' (no tuned layers)",
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
    if not args.branch and not args.embedding:
        raise UsageError("give at least one --branch, or --embedding")
    variants = list(dict.fromkeys(["fp32", *args.variants]))
    infos = read_branches(args.branch)
    base_model = args.base_model
    if base_model is None and infos:  # the branches' own base, not the packaged one
        base_model = infos[0].locate_base()
    base = load_base_model(base_model)
    with contextlib.ExitStack() as scratch:
        if args.embedding:
            max_seq_len = int(
                infos[0].meta.get("max_seq_len", DEFAULT_MAX_SEQ_LEN)
                if infos
                else DEFAULT_MAX_SEQ_LEN
            )
            embedding, handle = temporary_embedding_branch(base, max_seq_len)
            scratch.enter_context(handle)
            infos = [*infos, read_branch_info(embedding)]
            check_compatible(infos)
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
