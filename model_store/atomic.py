"""Publish a directory all at once, or not at all.

Readers (the merge step, the service) must never see a half-written artifact, so every
artifact directory is built under a temporary name beside its final place and renamed
into place only when complete. A rename within one file system is atomic; on failure
the temporary directory is removed and nothing is left behind. A process killed
outright (SIGKILL, power loss) cannot clean up, so staging names carry the builder's
process id, and the next build in the same place removes the leftovers of builders
that are no longer alive.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ArtifactExistsError(FileExistsError):
    """The destination is already taken: artifacts are never overwritten in place."""


# ".<final name>.tmp-<pid>-<random>" and ".<final name>.old-<pid>-<random>"
_STAGING = re.compile(r"\..+\.(?:tmp|old)-(\d+)-[^/]*")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_staging(directory: Path) -> list[Path]:
    """Remove staging directories left in `directory` by builders that died; returns them."""
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _STAGING.fullmatch(entry.name)
        if match and entry.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def atomic_directory(final: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `final` when the block succeeds.

    With `replace`, an existing `final` is swapped out only then: the old directory is
    renamed aside, the new one renamed in, and the old one removed.
    """
    final = Path(final)
    if final.exists() and not replace:
        raise ArtifactExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        yield staging
        # mkdtemp makes the directory private (0700); an artifact is read by others
        # too (a service container running as another user, for one).
        staging.chmod(0o755)
        if final.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent)
            )
            os.rename(final, retired / final.name)
            os.rename(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small file whole or not at all (temporary file beside it, then rename),
    readable by everyone like any other artifact (mkstemp alone would make it 0600)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
