"""Operations on a versioned model repository, as plain functions over typed arguments.

Choosing a new version's branches, keeping them in the repository, listing versions and
rolling back need no torch: the serving image runs `list` and `rollback`
(`python -m model_store`), and the training half's `publish`
(`training.graph.publish`) builds on `next_branches` and `keep_branch`. Only merging
the chosen branches into graphs needs torch.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from model_store.atomic import atomic_directory
from model_store.cli import UsageError
from model_store.locking import repository_lock
from model_store.manifest import MANIFEST_FILE, StoreError, load_manifest
from model_store.repository import (
    BRANCHES_DIR,
    CURRENT_FILE,
    VERSIONS_DIR,
    is_repository,
    list_versions,
    previous_version,
    resolve_store,
    set_current,
)


@dataclass(frozen=True)
class BranchRef:
    """A branch directory and the task and version its branch.json names (read once)."""

    task: str
    version: str
    path: Path


def check_publish_target(repository: Path, create: bool = False) -> None:
    """Refuse, before any work, a directory that cannot become or be a repository, and,
    unless `create`, one that is not a repository yet: a mistyped path must not quietly
    become a new repository holding one task."""
    if (repository / MANIFEST_FILE).is_file():
        raise UsageError(
            f"{repository} is a single store, not a repository: publish into a new "
            "directory (with --create)"
        )
    if repository.exists() and not is_repository(repository) and any(repository.iterdir()):
        raise UsageError(f"{repository} exists and is not a model repository")
    if not is_repository(repository) and not create:
        raise UsageError(
            f"{repository} is not a model repository (no {VERSIONS_DIR}/): check --store, "
            "or add --create to start a new one there"
        )


def keep_branch(repository: Path, branch: BranchRef) -> Path:
    """Copy a branch into the repository (once), so later versions can re-merge it."""
    target = repository / BRANCHES_DIR / branch.task / branch.version
    if target.exists() and not _same_files(target, branch.path):
        # A copy a killed publish left behind, of another branch under this version: it
        # must not stand in for the branch given now, unless a version was merged from it.
        if (branch.task, branch.version) in _published_branches(repository):
            raise UsageError(
                f"{target} holds another branch already published as {branch.task} "
                f"{branch.version}: give the new branch a new version"
            )
        shutil.rmtree(target)
    if not target.exists():
        with atomic_directory(target) as staging:
            for file in branch.path.iterdir():
                shutil.copy2(file, staging / file.name)
    return target


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in names
    )


def _published_branches(repository: Path) -> set[tuple[str, str]]:
    """(task, branch version) of every published version of the repository."""
    versions = repository / VERSIONS_DIR
    if not versions.is_dir():
        return set()
    return {
        pair
        for store in versions.iterdir()
        if not store.name.startswith(".")
        for pair in current_branches(store)
    }


def remove_unused_branches(repository: Path, keep: Sequence[Path] = ()) -> list[Path]:
    """Remove the kept branch copies no version was merged from (but `keep`): what a
    publish killed after copying its branch left behind, and the branches of pruned
    versions (a publish re-merges only the current version's). Call it under the
    repository's writer lock: a publish running beside it would still need its copy."""
    root = repository / BRANCHES_DIR
    if not root.is_dir():
        return []
    try:
        used = _published_branches(repository)
    except UsageError:  # a version whose tasks cannot be read: what it uses is unknown
        return []
    spared = {path.resolve() for path in keep}
    removed = []
    for task in sorted(p for p in root.iterdir() if p.is_dir()):
        for copy in sorted(p for p in task.iterdir() if p.is_dir()):
            if (task.name, copy.name) in used or copy.resolve() in spared:
                continue
            shutil.rmtree(copy, ignore_errors=True)
            removed.append(copy)
        with contextlib.suppress(OSError):
            task.rmdir()  # only once no copy of the task is left
    return removed


def forget_branches(copies: Sequence[Path]) -> None:
    """Remove branch copies a refused publish made (and their task directory, if
    emptied), so a corrected republish of the same branch version starts from its own
    files."""
    for path in copies:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when no other version of the task is kept


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


def next_branches(
    repository: Path, new: Sequence[BranchRef], remove: Sequence[str]
) -> dict[str, Path]:
    """The next version's branch directories by task: the current version's kept ones,
    with `new` replacing or adding tasks (kept into the repository) and `remove` left out.
    Tasks come in the current version's order, then the new ones'."""
    replacing: Mapping[str, BranchRef] = {branch.task: branch for branch in new}
    if len(replacing) != len(new):
        raise UsageError("two branches given for one task")
    both = sorted(set(replacing) & set(remove))
    if both:
        raise UsageError(f"task {both[0]} is both given as a branch and removed")
    paths: dict[str, Path] = {}
    current_tasks: list[str] = []
    if (repository / CURRENT_FILE).is_file():
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
    for task, branch in replacing.items():
        paths[task] = keep_branch(repository, branch)
    if not paths:
        raise UsageError("a version needs at least one task: nothing would be left")
    return paths


def rollback(repository: Path, to: str | None = None) -> str:
    """Make `to` (default: the version before the current one) current; its id. Holds
    the repository's writer lock, so a rollback never interleaves with a publish."""
    if not is_repository(repository):
        raise UsageError(f"{repository} is not a model repository (no {VERSIONS_DIR}/)")
    with repository_lock(repository, f"store: waiting for a publish into {repository}"):
        target = to or previous_version(repository)
        load_manifest(repository / VERSIONS_DIR / target)  # refuse a corrupt version up front
        set_current(repository, target)
    return target


def describe_versions(repository: Path) -> list[str]:
    """One line per version, oldest first, `*` marking the current one."""
    lines = []
    for info in list_versions(repository):
        tasks = ", ".join(
            f"{t.name}={t.branch_version} (K={t.layers})" for t in info.manifest.tasks
        )
        lines.append(
            f"{'*' if info.current else ' '} {info.version}  {info.manifest.created}  {tasks}"
        )
    return lines
