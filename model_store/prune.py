"""Remove old versions of a model repository, keeping what anyone may still need.

Kept, whatever `keep` says: the version CURRENT names, and every version a running
service holds a lease on (model_store/leases.py). Of the rest, the newest `keep`
(by version id, which sorts by publication time) are kept too, so that a rollback has
somewhere to go. Kept branches (`branches/`) are left to the next publish, which
removes those no remaining version was merged from
(`operations.remove_unused_branches`). A version is removed by renaming it aside first
(one atomic step, so a reader never sees half a version), then deleting it.
Torch-free: it runs in the serving image.

Concurrency (`model_store.locking`): a prune holds the repository's writer lock, so it
never runs beside a publish (which hard-links the new version's unchanged files to an
earlier version's) or a rollback (which may be about to make an old version current);
and it reads CURRENT and the leases and renames its victims aside under the CURRENT
lock, the same lock under which a starting or reloading service reads CURRENT and
leases what it read. So a version that is current, or that a service has chosen, is
never removed, in whatever order the operations come.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_store.leases import leased_versions
from model_store.locking import current_lock, repository_lock
from model_store.manifest import StoreError
from model_store.repository import CURRENT_FILE, VERSIONS_DIR, is_repository, read_current


@dataclass(frozen=True)
class PruneResult:
    removed: list[str]
    kept: dict[str, str]  # version -> why
    freed_bytes: int


def unique_bytes(directory: Path) -> int:
    """Bytes that removing `directory` frees: files with no other hard link."""
    total = 0
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            if stat.st_nlink == 1:
                total += stat.st_size
    return total


def prune(repository: Path, keep: int) -> PruneResult:
    """Remove every version but CURRENT, the leased ones and the newest `keep`."""
    if keep < 0:
        raise StoreError(f"--keep must be 0 or more, got {keep}")
    if not is_repository(repository):
        raise StoreError(f"{repository} is not a model repository (no {VERSIONS_DIR}/)")
    waiting = f"store: prune waits for another operation on {repository} to finish"
    with repository_lock(repository, waiting):
        with current_lock(repository):
            removed, kept, freed, aside = _set_aside(repository, keep)
        for path in aside:  # renamed out of versions/: no reader can reach them now
            shutil.rmtree(path)
    return PruneResult(removed, kept, freed)


def _set_aside(repository: Path, keep: int) -> tuple[list[str], dict[str, str], int, list[Path]]:
    """Under the CURRENT lock: decide what to remove from what CURRENT and the leases say
    now, and rename each victim aside (one atomic step each)."""
    versions_dir = repository / VERSIONS_DIR
    current_file = repository / CURRENT_FILE
    current = read_current(current_file) if current_file.is_file() else None
    versions = sorted(p.name for p in versions_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    kept: dict[str, str] = {}
    for version in versions[len(versions) - keep :] if keep else []:
        kept[version] = f"among the newest {keep}"
    for version, leases in leased_versions(repository).items():
        if version in versions:
            kept[version] = f"served (lease {', '.join(leases)})"
    if current in versions:
        kept[current] = "current"
    removed, freed, aside = [], 0, []
    for version in versions:
        if version in kept:
            continue
        target = versions_dir / version
        freed += unique_bytes(target)
        moved = versions_dir / f".{version}.old-{os.getpid()}-prune"
        target.rename(moved)
        aside.append(moved)
        removed.append(version)
    return removed, kept, freed, aside
