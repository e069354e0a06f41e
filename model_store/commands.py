"""The torch-free repository commands, `list`, `rollback` and `prune`, for the serving image.

    python -m model_store list --store models/default
    python -m model_store rollback --store models/default [--to VERSION]
    python -m model_store prune --store models/default --keep 2

The training half's store command (`bert-mts-store`) adds `publish` and registers these
from here, so both spell them the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.cli import OneLineArgumentParser, run_cli
from model_store.operations import describe_versions, rollback
from model_store.prune import prune

PROG = "bert-mts-repository"


def _list(args: argparse.Namespace) -> int:
    for line in describe_versions(args.store):
        print(line)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    version = rollback(args.store, args.to)
    print(f"current version of {args.store} is now {version}")
    return 0


def count(value: str) -> int:
    """argparse type of --keep: 0, 1, 2, ..."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0, 1, 2, ...)")
    return int(value)


def prune_lines(repository: Path, keep: int) -> list[str]:
    """Prune `repository` to `keep` versions besides the current and served ones; what
    was removed, what it freed and why each remaining version was kept."""
    result = prune(repository, keep)
    names = ", ".join(result.removed) or "none"
    freed = result.freed_bytes / 1e6
    lines = [f"pruned {len(result.removed)} version(s) ({names}), freed {freed:.1f} MB"]
    lines += [f"  kept {version}: {why}" for version, why in result.kept.items()]
    return lines


def _prune(args: argparse.Namespace) -> int:
    print("\n".join(prune_lines(args.store, args.keep)))
    return 0


def add_repository_commands(commands: argparse._SubParsersAction) -> None:
    """Register `list`, `rollback` and `prune` on a parser's subcommands."""
    list_cmd = commands.add_parser("list", help="list versions (* = current)")
    list_cmd.add_argument("--store", required=True, type=Path)
    list_cmd.set_defaults(run=_list)
    rollback_cmd = commands.add_parser("rollback", help="make an earlier version current")
    rollback_cmd.add_argument("--store", required=True, type=Path)
    rollback_cmd.add_argument("--to", metavar="VERSION", help="default: the one before current")
    rollback_cmd.set_defaults(run=_rollback)
    prune_cmd = commands.add_parser(
        "prune", help="remove old versions (never the current one or one a service serves)"
    )
    prune_cmd.add_argument("--store", required=True, type=Path)
    prune_cmd.add_argument(
        "--keep", required=True, type=count, metavar="N", help="newest versions to keep too"
    )
    prune_cmd.set_defaults(run=_prune)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_repository_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def run() -> int:
    """Console-script entry point."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
