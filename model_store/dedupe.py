"""Versions share identical files: a new version's file whose bytes an older version
already holds becomes a hard link to that file.

Versions are immutable (nothing writes into a published file; every write is a new
file renamed into place), so two versions may share an inode safely, and the serving
side reads them unchanged. Removing a version (prune) frees only the files no other
version links. Candidates are found by the sha256 every manifest records, then
confirmed byte for byte, so a damaged older file is never linked in. Torch-free.
"""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

from model_store.manifest import MANIFEST_FILE


def _recorded_files(version_dir: Path) -> dict[str, str]:
    """file name -> sha256, from a manifest (unverified), or {} if unreadable."""
    try:
        raw = json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in raw["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def link_identical_files(version_dir: Path) -> int:
    """Hard-link `version_dir`'s files to identical ones of its sibling versions; returns
    the bytes saved. Each replacement is one rename, so readers see a whole file."""
    version_dir = Path(version_dir)
    by_hash: dict[str, Path] = {}
    for sibling in sorted(version_dir.parent.iterdir()):
        if sibling == version_dir or sibling.name.startswith(".") or not sibling.is_dir():
            continue
        for name, digest in _recorded_files(sibling).items():
            by_hash.setdefault(digest, sibling / name)
    saved = 0
    for name, digest in _recorded_files(version_dir).items():
        ours, theirs = version_dir / name, by_hash.get(digest)
        if theirs is None or not theirs.is_file() or not ours.is_file():
            continue
        if os.path.samefile(ours, theirs) or ours.stat().st_size != theirs.stat().st_size:
            continue
        if not filecmp.cmp(ours, theirs, shallow=False):
            continue
        staging = version_dir / f".{name}.link-{os.getpid()}"
        try:
            os.link(theirs, staging)
        except OSError:  # another file system, or links unsupported: keep the copy
            continue
        os.replace(staging, ours)
        saved += ours.stat().st_size
    return saved
