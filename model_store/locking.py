"""One writer at a time on a model repository: an advisory lock held for a whole publish.

A publish reads CURRENT, merges the other tasks' branches of that version with the new
ones, writes a new version and points CURRENT at it; that takes a minute or two. Two of
them at once would each merge the CURRENT they read, and the later switch would drop
the other's update. So every writer (publish, rollback) holds an exclusive
`fcntl.flock` on `<repository>/.publish.lock` from before it reads CURRENT until after
it has switched it. The kernel releases the lock when its holder dies, so a killed
publish leaves no stale lock behind. Readers (the service) need no lock: CURRENT is
replaced atomically. POSIX only, like the rest of the serving stack.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".publish.lock"


@contextmanager
def repository_lock(repository: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold the repository's writer lock for the block, waiting for another holder;
    `waiting`: a line to print to stderr when it has to wait (so a blocked publish is not
    mistaken for a hung one)."""
    repository.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(repository / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
