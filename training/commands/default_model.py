"""Build the shipped default model into a servable repository, or ship a new branch.

    bert-mts-default-model build                  # models/default, once (what `make model` runs)
    bert-mts-default-model pack --branch runs/tune/sentiment   # ship a new branch
    bert-mts-default-model pack --embedding       # ship the base's sentence embedding task
    bert-mts-default-model build --record --data-dir ../shared/data   # after packing

The work, and why the build is checked by hash: `training.graph.default_model`. The
default folders (models/shipped, models/default) are `model_store.locations`'.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.hints import script_command
from model_store.locations import default_store, shipped_dir
from training.commands.cli import OneLineArgumentParser, UsageError, run_cli
from training.graph.default_model import (
    CHECKSUMS,
    VARIANT_METRICS,
    ChecksumError,
    build,
    pack_branch,
    ship_embedding,
)

PROG = "default_model"


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the default store from the branches")
    build_cmd.add_argument("--out", type=Path, default=default_store())
    build_cmd.add_argument("--shipped", type=Path, default=shipped_dir())
    build_cmd.add_argument(
        "--record",
        action="store_true",
        help=f"write {CHECKSUMS} and {VARIANT_METRICS} from this build",
    )
    build_cmd.add_argument(
        "--data-dir",
        type=Path,
        help="with --record: where the branches' data files are, by name (e.g. ../shared/data)",
    )
    pack_cmd = commands.add_parser("pack", help="ship trained branches (int8 weights)")
    pack_cmd.add_argument("--branch", action="append", type=Path, default=[])
    pack_cmd.add_argument(
        "--embedding",
        action="store_true",
        help="ship the base's sentence embedding task (no tuned layers, no weights)",
    )
    pack_cmd.add_argument("--shipped", type=Path, default=shipped_dir())
    args = parser.parse_args(argv)
    if args.command == "pack":
        if not args.branch and not args.embedding:
            raise UsageError("pack needs --branch or --embedding")
        for branch in args.branch:
            print(f"packed {pack_branch(branch, args.shipped)}")
        if args.embedding:
            print(f"packed {ship_embedding(args.shipped)}")
        print(
            "now record the new checksums and metrics: "
            + script_command(
                "bert-mts-default-model", "build", "--record", "--data-dir", "../shared/data"
            )
        )
        return 0
    if args.data_dir is not None and not args.record:
        raise UsageError("--data-dir is only read with --record")
    path, _ = build(args.shipped, args.out, args.record, args.data_dir)
    print(f"{'recorded' if args.record else 'built and verified'} {path}")
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-default-model`)."""
    return run_cli(main, None, PROG, extra_errors=(ChecksumError,))


if __name__ == "__main__":
    sys.exit(run())
