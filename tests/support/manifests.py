"""Edit a published manifest the way a buggy publisher would: consistently sealed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from model_store.manifest import MANIFEST_FILE, SELF_HASH_KEY, content_sha256


def rewrite_manifest(store: Path, edit: Callable[[dict], None], seal: bool = True) -> None:
    """Apply `edit` to store/manifest.json; with `seal`, recompute its own sha256 so only
    the content checks (not the integrity check) can catch the edit."""
    path = store / MANIFEST_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    if seal:
        raw[SELF_HASH_KEY] = content_sha256(raw)
    path.write_text(json.dumps(raw, indent=2))
