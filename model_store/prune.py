"""Remove old versions of a model repository, keeping what anyone may still need.

Kept, whatever `keep` says: the version CURRENT names, and every version a running
service holds a lease on (model_store/leases.py). Of the rest, the newest `keep`
(by version id, which sorts by publication time) are kept too, so that a rollback has
somewhere to go. Kept branches (`branches/`) are left alone: a later publish re-merges
from them. A version is removed by renaming it aside first (one atomic step, so a
reader never sees half a version), then deleting it. Torch-free: it runs in the
serving image.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_store.leases import leased_versions
from model_store.manifest import StoreError
from model_store.repository import CURRENT_FILE, VERSIONS_DIR, is_repository


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
    versions_dir = repository / VERSIONS_DIR
    current_file = repository / CURRENT_FILE
    current = current_file.read_text(encoding="utf-8").strip() if current_file.is_file() else None
    versions = sorted(p.name for p in versions_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    kept: dict[str, str] = {}
    for version in versions[len(versions) - keep :] if keep else []:
        kept[version] = f"among the newest {keep}"
    for version, leases in leased_versions(repository).items():
        if version in versions:
            kept[version] = f"served (lease {', '.join(leases)})"
    if current in versions:
        kept[current] = "current"
    removed, freed = [], 0
    for version in versions:
        if version in kept:
            continue
        target = versions_dir / version
        freed += unique_bytes(target)
        aside = versions_dir / f".{version}.old-{os.getpid()}-prune"
        target.rename(aside)
        shutil.rmtree(aside)
        removed.append(version)
    return PruneResult(removed, kept, freed)
