"""Tiny stores built once per run, and by a run with torch for a run without it.

Building a store needs torch (tests/support/tiny_store.py); serving one does not. So
the service's tests take their stores from here: with torch installed, each is built
on first use into the cache directory; without torch (the serving environment), the
cache must already hold it, built by an earlier run with torch that was given the same
directory in `$BERT_MTS_TEST_STORES` (.ci/run does exactly that); else the test is
skipped, saying why. Every builder is seeded, so a cached store is the store the test
would have built itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

STORES_ENV = "BERT_MTS_TEST_STORES"
_COMPLETE = ".complete"


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def requires_torch() -> None:
    """Skip the calling test or fixture where torch is not installed."""
    if not has_torch():
        pytest.skip("needs torch (the training half): runs in the environment with `.[train]`")


class StoreCache:
    """Named directories of built artifacts, each built at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str, build: Callable[[Path], None]) -> Path:
        """The directory `name`, built by `build(directory)` if torch allows."""
        directory = self.root / name
        if (directory / _COMPLETE).is_file():
            return directory
        if not has_torch():
            pytest.skip(
                f"the {name!r} test store is built with torch: run the tests with torch "
                f"first, with {STORES_ENV} naming the same directory as here"
            )
        staging = self.root / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        build(staging)
        (staging / _COMPLETE).touch()
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        return directory


def cache_root(fallback: Path) -> Path:
    """`$BERT_MTS_TEST_STORES` when set (shared between runs), else `fallback`."""
    configured = os.environ.get(STORES_ENV)
    root = Path(configured) if configured else fallback
    root.mkdir(parents=True, exist_ok=True)
    return root
