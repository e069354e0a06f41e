"""Manage a versioned model repository: publish branches, list versions, roll back.

    python -m training.store publish --store model_store/default --branch runs/branches/sentiment
    python -m training.store publish --store model_store/default --remove topic
    python -m training.store list --store model_store/default
    python -m training.store rollback --store model_store/default [--to VERSION]
    python -m training.store prune --store model_store/default --keep 2

`publish` merges the given branches with the current version's other branches (kept
in the repository), less any `--remove`d task, into a new immutable version and makes
it current; a running service picks it up on reload (POST /admin/reload or SIGHUP).
The tasks that were not replaced keep bit-identical outputs, whatever the new
branch's depth. `publish --create` starts a new repository from the given branches;
without it, a --store that is not a repository yet is refused.

`prune` removes old versions (model_store/prune.py says which it keeps); identical
files of versions are hard links (model_store/dedupe.py).

`list`, `rollback` and `prune` need no torch (they run inside the serving image): the merge
machinery is imported only by `publish`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model_store.atomic import atomic_directory
from model_store.dedupe import link_identical_files
from model_store.manifest import GRAPH_FILES, MANIFEST_FILE, Manifest, StoreError, load_manifest
from model_store.prune import prune
from model_store.repository import (
    BRANCHES_DIR,
    VERSIONS_DIR,
    is_repository,
    list_versions,
    new_version_id,
    previous_version,
    resolve_store,
    set_current,
)
from model_store.tasks import NAME_PATTERN
from training.cli import OneLineArgumentParser, UsageError, run_cli
from training.errors import MergeError

if TYPE_CHECKING:
    from training.branch import BranchInfo

PROG = "store"
KEEP_ENV = "BERT_MTS_KEEP_VERSIONS"


def keep_branch(repository: Path, info: BranchInfo) -> Path:
    """Copy a branch into the repository (once), so later versions can re-merge it."""
    target = repository / BRANCHES_DIR / info.task / info.version
    if not target.exists():
        with atomic_directory(target) as staging:
            for file in info.path.iterdir():
                shutil.copy2(file, staging / file.name)
    return target


def current_branches(store: Path) -> list[tuple[str, str]]:
    """(task, branch version) of a published version, read from its manifest whatever
    its format version: a repository whose current version an older release published
    (format 2, before the tree-shaped graph) is re-merged from its kept branches into the
    current format, instead of being refused."""
    try:
        return [
            (task.name, task.branch_version) for task in load_manifest(store, verify=False).tasks
        ]
    except StoreError:
        try:
            raw = json.loads((store / MANIFEST_FILE).read_text(encoding="utf-8"))
            return [(t["definition"]["name"], str(t["branch_version"])) for t in raw["tasks"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(f"{store}: cannot read its tasks from {MANIFEST_FILE}") from None


def _branch_set(repository: Path, new: list[BranchInfo], remove: list[str]) -> list[Path]:
    """The current version's branches, with the given ones replacing or adding tasks and
    the removed ones left out."""
    replacing = {info.task: info for info in new}
    if len(replacing) != len(new):
        raise MergeError("two branches given for one task")
    both = sorted(set(replacing) & set(remove))
    if both:
        raise UsageError(f"task {both[0]} is both given as a branch and removed")
    paths: dict[str, Path] = {}
    current_tasks: list[str] = []
    if (repository / "CURRENT").is_file():
        current = current_branches(resolve_store(repository))
        current_tasks = [name for name, _ in current]
        for name, version in current:
            if name in remove:
                continue
            kept = repository / BRANCHES_DIR / name / version
            if name not in replacing and not kept.is_dir():
                raise UsageError(f"{repository} lacks branch {name}/{version}")
            paths[name] = kept
    absent = [task for task in remove if task not in current_tasks]
    if absent:
        served = ", ".join(current_tasks) or "none"
        raise UsageError(
            f"cannot remove {absent[0]}: the current version has no such task (it has {served})"
        )
    for task, info in replacing.items():
        paths[task] = keep_branch(repository, info)
    if not paths:
        raise UsageError("a version needs at least one task: nothing would be left")
    return list(paths.values())


def previous_manifest(repository: Path) -> Manifest | None:
    """The current version's manifest (its recorded metrics are carried over for the
    tasks that did not change), or None for a new or older-format repository."""
    if not (repository / "CURRENT").is_file():
        return None
    try:
        return load_manifest(resolve_store(repository), verify=False)
    except StoreError:
        return None


@contextlib.contextmanager
def quiet_log(name: str) -> Iterator[None]:
    """Only warnings from logger `name` while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def publish(args: argparse.Namespace) -> int:
    from training.base_model import load_base_model
    from training.branch import read_branch_info, resolve_branch_dir
    from training.incremental_metrics import incremental_measurer
    from training.merge import PROG as MERGE_LOG
    from training.merge import check_compatible, load_branches, publish_store
    from training.publish_report import publish_summary

    repository: Path = args.store
    if not args.branch and not args.remove:
        raise UsageError("publish needs --branch (add or replace a task) or --remove TASK")
    if (repository / MANIFEST_FILE).is_file():
        raise UsageError(
            f"{repository} is a single store, not a repository: publish into a new directory"
        )
    if repository.exists() and not is_repository(repository) and any(repository.iterdir()):
        raise UsageError(f"{repository} exists and is not a model repository")
    if not is_repository(repository) and not args.create:
        raise UsageError(
            f"{repository} is not a model repository (no {VERSIONS_DIR}/): check --store, "
            "or add --create to start a new one there"
        )
    new = [read_branch_info(resolve_branch_dir(path)) for path in args.branch]
    if new:
        check_compatible(new)
    (repository / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    base = load_base_model(args.base_model)
    branches = load_branches(_branch_set(repository, new, args.remove), base)
    version = new_version_id()
    with quiet_log(MERGE_LOG):  # its raw parity line is explained in the summary instead
        manifest = publish_store(
            base,
            branches,
            repository / VERSIONS_DIR / version,
            ["fp32", *args.variants],
            metrics=incremental_measurer(previous_manifest(repository), args.data_dir),
        )
    shared = link_identical_files(repository / VERSIONS_DIR / version)
    if not args.no_activate:
        set_current(repository, version)
    state = "current" if not args.no_activate else "not activated"
    tasks = ", ".join(f"{t.name} {t.branch_version}" for t in manifest.tasks)
    print(f"published {version} ({state}): {tasks}")
    print("\n".join(publish_summary(manifest, [info.task for info in new])))
    if shared:
        print(f"  {shared / 1e6:.1f} MB shared with earlier versions (hard links)")
    if args.keep is not None:
        report_prune(repository, args.keep)
    return 0


def report_prune(repository: Path, keep: int) -> None:
    result = prune(repository, keep)
    names = ", ".join(result.removed) or "none"
    freed = result.freed_bytes / 1e6
    print(f"pruned {len(result.removed)} version(s) ({names}), freed {freed:.1f} MB")
    for version, why in result.kept.items():
        print(f"  kept {version}: {why}")


def prune_versions(args: argparse.Namespace) -> int:
    report_prune(args.store, args.keep)
    return 0


def show(args: argparse.Namespace) -> int:
    for info in list_versions(args.store):
        tasks = ", ".join(
            f"{t.name}={t.branch_version} (K={t.layers})" for t in info.manifest.tasks
        )
        print(f"{'*' if info.current else ' '} {info.version}  {info.manifest.created}  {tasks}")
    return 0


def rollback(args: argparse.Namespace) -> int:
    target = args.to or previous_version(args.store)
    load_manifest(args.store / VERSIONS_DIR / target)  # refuse a corrupt version up front
    set_current(args.store, target)
    print(f"current version of {args.store} is now {target}")
    return 0


def _task_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a task name")
    return value


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0, 1, 2, ...)")
    return int(value)


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
    publish_cmd.add_argument("--base-model", type=Path, metavar="PATH")
    publish_cmd.add_argument(
        "--variants",
        nargs="*",
        choices=[v for v in GRAPH_FILES if v != "fp32"],
        default=["int8"],
        help="graphs besides fp32 (default: int8, which `--graph auto` serves on CPUs when "
        "its validation metrics keep accuracy)",
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
    publish_cmd.set_defaults(run=publish)
    publish_cmd.add_argument(
        "--keep",
        type=_count,
        default=_keep_default(),
        metavar="N",
        help="then prune: keep the newest N versions besides the current and served ones "
        "(default: $BERT_MTS_KEEP_VERSIONS, else keep every version)",
    )
    prune_cmd = commands.add_parser(
        "prune", help="remove old versions (never the current one or one a service serves)"
    )
    prune_cmd.add_argument("--store", required=True, type=Path)
    prune_cmd.add_argument(
        "--keep", required=True, type=_count, metavar="N", help="newest versions to keep too"
    )
    prune_cmd.set_defaults(run=prune_versions)
    list_cmd = commands.add_parser("list", help="list versions (* = current)")
    list_cmd.add_argument("--store", required=True, type=Path)
    list_cmd.set_defaults(run=show)
    rollback_cmd = commands.add_parser("rollback", help="make an earlier version current")
    rollback_cmd.add_argument("--store", required=True, type=Path)
    rollback_cmd.add_argument("--to", metavar="VERSION", help="default: the one before current")
    rollback_cmd.set_defaults(run=rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(run_cli(main, None, PROG))
