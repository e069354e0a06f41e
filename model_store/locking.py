"""Two advisory locks on a model repository: one writer at a time, and a short one
around CURRENT and the serving leases.

The writer lock (`repository_lock`, `<repository>/.publish.lock`). A publish reads
CURRENT, merges the other tasks' branches of that version with the new ones, writes a
new version and points CURRENT at it; that takes seconds to minutes. Two of them at
once would each merge the CURRENT they read, and the later switch would drop the
other's update; a prune meanwhile could remove the version a publish links its
unchanged files to, or the one a rollback is about to make current. So every operation
that writes the repository (publish, rollback, prune) holds this exclusive lock from
before it reads CURRENT until it is done.

The CURRENT lock (`current_lock`, `<repository>/.current.lock`), held for milliseconds.
A starting or reloading service reads CURRENT and then writes its lease on that version;
a prune reads CURRENT and the leases and then removes the versions neither names. Were
those steps to interleave, a prune could remove the version a service has just chosen
but not yet leased. So each of these reads and acts under the CURRENT lock, and so does
every switch of CURRENT. The service never takes the writer lock: it would wait for a
whole publish before it could start.

Ordering: the writer lock is always taken before the CURRENT lock, never the other way,
so the two cannot deadlock. The kernel releases a lock when its holder dies, so a
killed operation leaves no stale lock behind. POSIX only, like the rest of the serving
stack.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".publish.lock"
CURRENT_LOCK_FILE = ".current.lock"
log = logging.getLogger(__name__)


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


@contextmanager
def current_lock(repository: Path) -> Iterator[None]:
    """Hold the repository's CURRENT lock for the block (a few file operations). A
    repository where the lock file cannot be created (a read-only volume: nothing here
    can prune or publish it either) is read without the lock."""
    path = repository / CURRENT_LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:  # a read-only volume: flock works on a descriptor opened for reading
            descriptor = os.open(path, os.O_RDONLY)
        except OSError as err:
            log.debug("reading %s without its CURRENT lock: %s", repository, err)
            yield
            return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
