"""Publish a directory all at once, or not at all.

Readers (the merge step, the service) must never see a half-written artifact, so every
artifact directory is built under a temporary name beside its final place and renamed
into place only when complete. A rename within one file system is atomic; on failure
the temporary directory is removed and nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ArtifactExistsError(FileExistsError):
    """The destination is already taken: artifacts are never overwritten in place."""


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `final` when the block succeeds."""
    final = Path(final)
    if final.exists():
        raise ArtifactExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        # mkdtemp makes the directory private (0700); an artifact is read by others
        # too (a service container running as another user, for one).
        staging.chmod(0o755)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
