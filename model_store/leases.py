"""Which versions of a repository running services serve: one lease file per process.

    model_store/<name>/leases/<host>-<pid>.json   {"version", "versions", "host", "pid", "since"}

A service serving a repository claims the version CURRENT names before it loads it
(`claim`: CURRENT is read and the lease written under the repository's CURRENT lock,
`model_store.locking`, so a prune running at that moment either sees the lease or ran
before the read), keeps its lease on what it serves while a reload loads the next
version (`versions` then lists both), and narrows the lease to the version it serves
once the load succeeded or failed. Leases are written atomically (temporary file, then
rename) and removed when the service stops. Pruning never removes a leased version, so a
process can keep serving, and rolling back to, what it has loaded even after CURRENT
moved on. A lease of a process on this host that
is no longer alive (killed outright) is stale and ignored; one from another host (a
shared volume) cannot be checked from here and is honoured until that host's service
replaces or removes it (delete the file by hand for a host that is gone).
A read-only repository (a volume mounted read-only) gets no lease: serving goes on,
with a warning. Torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from model_store.atomic import atomic_write_text
from model_store.locking import current_lock
from model_store.repository import VERSIONS_DIR, is_repository, resolve_store

LEASES_DIR = "leases"
log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class ServingLease:
    """This process's lease on the version it serves (a no-op for a plain store)."""

    def __init__(self, model_dir: Path) -> None:
        self.repository = Path(model_dir) if is_repository(Path(model_dir)) else None
        self.host = socket.gethostname()
        self.path = (
            self.repository / LEASES_DIR / f"{self.host}-{os.getpid()}.json"
            if self.repository is not None
            else None
        )
        self.serving: list[str] = []  # the version(s) this process serves now

    def claim(self, model_dir: Path) -> Path:
        """The store to load now (a plain store, or the repository's current version),
        leased together with what this process already serves, under the CURRENT lock."""
        if self.repository is None:
            return resolve_store(model_dir)
        with current_lock(self.repository):
            store = resolve_store(model_dir)
            self._write([*self.serving, store.name])
        return store

    def hold(self, store_dir: Path) -> None:
        """Record that this process now serves `store_dir` (a version of the repository),
        and only it."""
        if self.path is None or Path(store_dir).parent.name != VERSIONS_DIR:
            return
        self.serving = [Path(store_dir).name]
        self._write(self.serving)

    def _write(self, versions: list[str]) -> None:
        if self.path is None:
            return
        versions = list(dict.fromkeys(versions))  # in order, once each
        record = {
            "version": versions[-1],
            "versions": versions,
            "host": self.host,
            "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            self.path.parent.mkdir(exist_ok=True)
            atomic_write_text(self.path, json.dumps(record) + "\n")
        except OSError as err:  # a read-only repository: say so once, then stop trying
            log.warning(
                "cannot write the serving lease %s (pruning cannot see it): %s", self.path, err
            )
            self.path = None

    def release(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as err:
                log.warning("cannot remove the serving lease %s: %s", self.path, err)


def leased_versions(repository: Path) -> dict[str, list[str]]:
    """version -> the leases (file names) that hold it, stale ones left out."""
    held: dict[str, list[str]] = {}
    directory = Path(repository) / LEASES_DIR
    if not directory.is_dir():
        return held
    host = socket.gethostname()
    for lease in sorted(directory.glob("*.json")):
        try:
            record = json.loads(lease.read_text(encoding="utf-8"))
            versions = [str(v) for v in record.get("versions") or [record["version"]]]
            pid, lease_host = int(record["pid"]), record["host"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # half-readable: a lease is written atomically, so not one of ours
        if lease_host == host and not _alive(pid):
            continue
        for version in versions:
            held.setdefault(version, []).append(lease.name)
    return held
