"""A versioned model repository: immutable store versions and a pointer to the live one.

    model_store/<name>/
        CURRENT                    the id of the version being served (one line)
        versions/<id>/             immutable stores (manifest.json, graphs, tokenizer)
        branches/<task>/<version>/ the branches the versions were merged from

Publishing a new version never touches a published one; making it live, or rolling
back, is one atomic replacement of CURRENT. A running service re-reads CURRENT on
reload. A plain store directory (manifest.json at its top) is still servable, as a
single fixed version. Torch-free: the service resolves and lists versions with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from model_store.atomic import atomic_write_text
from model_store.locking import current_lock
from model_store.manifest import MANIFEST_FILE, Manifest, StoreError, load_manifest
from model_store.quoting import quoted

CURRENT_FILE = "CURRENT"
NAME_MAX = 255  # the longest file name (and so version id) a file system takes
VERSIONS_DIR = "versions"
BRANCHES_DIR = "branches"


def is_repository(path: Path) -> bool:
    return (path / VERSIONS_DIR).is_dir()


def resolve_store(path: str | Path) -> Path:
    """The store directory to serve: a plain store itself, or a repository's current."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file() or not is_repository(path):
        return path
    current = path / CURRENT_FILE
    if not current.is_file():
        raise StoreError(f"{path} is a model repository without a {CURRENT_FILE} version")
    version = read_current(current)
    if not version or "/" in version or version.startswith(".") or len(version) > NAME_MAX:
        raise StoreError(f"{current} does not name a version: {quoted(version)}")
    store = path / VERSIONS_DIR / version
    if not store.is_dir():
        raise StoreError(f"{current} names version {quoted(version)}, which does not exist")
    return store


def read_current(current: Path) -> str:
    """The version id CURRENT names (stripped); StoreError if it is not UTF-8 text."""
    try:
        return current.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise StoreError(f"{current} is not a version id (not UTF-8 text: {err})") from None


def new_version_id(now: datetime | None = None) -> str:
    """Sortable by time; the manifest's hashes, not the id, identify the content."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("v%Y%m%dT%H%M%S%fZ")


def set_current(repository: Path, version: str) -> None:
    """Point CURRENT at `version`, atomically (write a temporary file, then rename),
    under the CURRENT lock (`model_store.locking`): a prune deciding what to remove sees
    CURRENT before or after the switch, never between its check and its write."""
    with current_lock(repository):
        if not (repository / VERSIONS_DIR / version / MANIFEST_FILE).is_file():
            raise StoreError(f"{repository} has no version {quoted(version)}")
        atomic_write_text(repository / CURRENT_FILE, version + "\n")


@dataclass(frozen=True)
class VersionInfo:
    version: str
    current: bool
    manifest: Manifest


def list_versions(repository: Path) -> list[VersionInfo]:
    """Every published version, oldest first (without re-hashing their files)."""
    if not is_repository(repository):
        raise StoreError(f"{repository} is not a model repository (no {VERSIONS_DIR}/)")
    current_file = repository / CURRENT_FILE
    current = read_current(current_file) if current_file.is_file() else None
    directories = (repository / VERSIONS_DIR).iterdir()
    versions = sorted(p for p in directories if not p.name.startswith("."))
    return [
        VersionInfo(p.name, p.name == current, load_manifest(p, verify=False)) for p in versions
    ]


def previous_version(repository: Path) -> str:
    """The version published before the current one: what a rollback returns to."""
    versions = list_versions(repository)
    names = [v.version for v in versions]
    current = next((v.version for v in versions if v.current), None)
    if current is None or names.index(current) == 0:
        raise StoreError(f"{repository}: there is no version before the current one")
    return names[names.index(current) - 1]
