"""Manage a versioned model repository: publish branches, list versions, roll back.

    bert-mts-store publish --store models/default --branch runs/branches/sentiment
    bert-mts-store publish --store models/default --remove topic
    bert-mts-store publish --store models/default --embedding
    bert-mts-store list --store models/default
    bert-mts-store rollback --store models/default [--to VERSION]
    bert-mts-store prune --store models/default --keep 2

`publish` (`training.graph.publish`) merges the given branches with the current
version's other branches, less any `--remove`d task, into a new immutable version and
makes it current; a running service picks it up on reload (POST /admin/reload or
SIGHUP). `publish --create` starts a new repository from the given branches; without
it, a --store that is not a repository yet is refused. `publish --keep N` (or
$BERT_MTS_KEEP_VERSIONS) prunes after publishing.

`list`, `rollback` and `prune` need no torch: they are `model_store.commands`' (the
serving image runs them as `python -m model_store`); the merge machinery is imported
only by `publish`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.cli import OneLineArgumentParser, UsageError
from model_store.commands import add_repository_commands, count, prune_lines
from model_store.manifest import GRAPH_FILES
from model_store.tasks import NAME_PATTERN
from training.commands.cli import run_cli
from training.graph.graph_policy import CHOICES

PROG = "bert-mts-store"
KEEP_ENV = "BERT_MTS_KEEP_VERSIONS"


def publish(args: argparse.Namespace) -> int:
    from training.graph.publish import publish as publish_version
    from training.graph.publish_report import publish_summary

    published = publish_version(
        args.store,
        args.branch,
        args.remove,
        base_model=args.base_model,
        variants=args.variants,
        activate=not args.no_activate,
        data_dir=args.data_dir,
        embedding=args.embedding,
        create=args.create,
        graph_choice=args.graph_choice,
    )
    state = "current" if published.current else "not activated"
    tasks = ", ".join(f"{t.name} {t.branch_version}" for t in published.manifest.tasks)
    print(f"published {published.version} ({state}): {tasks}")
    print("\n".join(publish_summary(published.manifest, published.changed)))
    if published.shared_bytes:
        print(f"  {published.shared_bytes / 1e6:.1f} MB shared with earlier versions (hard links)")
    if args.keep is not None:
        print("\n".join(prune_lines(args.store, args.keep)))
    return 0


def _task_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a task name")
    return value


def _keep_default() -> int | None:
    """BERT_MTS_KEEP_VERSIONS, the publish-time pruning setting (unset: keep all)."""
    value = os.environ.get(KEEP_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise UsageError(f"{KEEP_ENV} must be a count (0, 1, 2, ...), got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    publish_cmd = commands.add_parser("publish", help="merge branches into a new version")
    publish_cmd.add_argument("--store", required=True, type=Path)
    publish_cmd.add_argument(
        "--branch", action="append", type=Path, default=[], help="add or replace a task"
    )
    publish_cmd.add_argument(
        "--remove",
        action="append",
        type=_task_name,
        default=[],
        metavar="TASK",
        help="publish a version without this task",
    )
    publish_cmd.add_argument(
        "--embedding",
        action="store_true",
        help="add (or refresh) the base's sentence embedding as task 'embedding': no tuned "
        "layers, it forks at the top of the frozen base",
    )
    publish_cmd.add_argument(
        "--base-model",
        type=Path,
        metavar="PATH",
        help="default: the base of the repository's current version (else the branches')",
    )
    publish_cmd.add_argument(
        "--variants",
        nargs="*",
        choices=[v for v in GRAPH_FILES if v != "fp32"],
        default=None,
        help="graphs besides fp32 (default: the current version's; int8 for a new "
        "repository, which `--graph auto` serves on CPUs when it keeps accuracy)",
    )
    publish_cmd.add_argument("--no-activate", action="store_true", help="do not make it current")
    publish_cmd.add_argument(
        "--create",
        action="store_true",
        help="start a new repository if --store is not one yet (without it, a mistyped "
        "--store is refused instead of becoming a new repository)",
    )
    publish_cmd.add_argument(
        "--data-dir",
        type=Path,
        help="look the branches' recorded data files up here, by name (for the graphs' "
        "validation metrics)",
    )
    publish_cmd.add_argument(
        "--graph-choice",
        choices=CHOICES,
        help="when the new figures would switch the graph `--graph auto` serves (which "
        "changes every task's answers): keep the current one, or update to the new one "
        "(default: refuse such a publish)",
    )
    publish_cmd.add_argument(
        "--keep",
        type=count,
        default=_keep_default(),
        metavar="N",
        help="then prune: keep the newest N versions besides the current and served ones "
        f"(default: ${KEEP_ENV}, else keep every version)",
    )
    publish_cmd.set_defaults(run=publish)
    add_repository_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def run() -> int:
    """Console-script entry point (`bert-mts-store`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
