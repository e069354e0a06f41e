"""Repository operations racing each other never lose the current version.

Rollback, prune and a starting (or reloading) service each read CURRENT and act on what
they read; `model_store.locking` makes those read-then-act steps atomic with respect to
one another. Each race here is run many times, in both orders (which operation is let
go first), with the two operations released together from a barrier: before the locks,
a prune that read CURRENT just before a rollback switched it removed the version the
rollback made current, and a prune between a service's read of CURRENT and its lease
removed the version the service was loading. Publish against prune (training half):
tests/training/test_prune.py.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from model_store import operations
from model_store import prune as prune_module
from model_store.manifest import StoreError, load_manifest
from model_store.repository import (
    CURRENT_FILE,
    VERSIONS_DIR,
    list_versions,
    resolve_store,
    set_current,
)
from service import engine as engine_module
from service.metrics import ServiceMetrics
from service.reloader import ModelReloader
from service.settings import Settings

TRIES = 12
_SERIAL = itertools.count()


def with_versions(repository: Path, count: int) -> list[str]:
    """`count` more versions (copies of the current one, by new ids that sort after it),
    the newest made current; every version id, oldest first."""
    current = resolve_store(repository)
    for _ in range(count):
        # Ids in the format of new_version_id, later than any real one, in order.
        version = f"v9999{next(_SERIAL):08d}T000000000000Z"
        shutil.copytree(current, repository / VERSIONS_DIR / version)
    names = [info.version for info in list_versions(repository)]
    set_current(repository, names[-1])
    return names


def race(first: Callable[[], object], second: Callable[[], object]) -> None:
    """Run `first`, and `second` 10 ms later (inside `first`'s slowed-down window), at
    once; re-raise their errors in the test's thread."""
    errors: list[BaseException] = []

    def go(work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=go, args=(work,)) for work in (first, second)]
    threads[0].start()
    time.sleep(0.01)
    threads[1].start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def slowed(module: object, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `module.name` take 50 ms longer: the window in which the other operation
    of a race acts."""
    original = getattr(module, name)

    def slow(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        time.sleep(0.05)
        return result

    monkeypatch.setattr(module, name, slow)


def assert_current_is_servable(repository: Path) -> None:
    store = resolve_store(repository)  # raises if CURRENT names a missing version
    load_manifest(store)  # and the version is whole


@pytest.mark.parametrize("rollback_first", [True, False], ids=["rollback-first", "prune-first"])
def test_rollback_and_prune_never_leave_current_naming_a_missing_version(
    repository: Path, rollback_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rollback --to OLDEST` and `prune --keep 1`, one of them slowed down between
    reading the repository and acting on it, the other started inside that window."""
    slowed(operations, "load_manifest", monkeypatch)  # rollback: checked its target
    slowed(prune_module, "unique_bytes", monkeypatch)  # prune: chose what to remove
    for _ in range(TRIES):
        with_versions(repository, 3)
        oldest = list_versions(repository)[0].version
        refused: list[StoreError] = []

        def roll_back(target: str = oldest, refused: list[StoreError] = refused) -> None:
            try:
                operations.rollback(repository, target)
            except StoreError as err:
                refused.append(err)

        def prune_all_but_one() -> None:
            prune_module.prune(repository, keep=1)

        if rollback_first:
            race(roll_back, prune_all_but_one)
            assert not refused, refused
            assert (repository / CURRENT_FILE).read_text().strip() == oldest
        else:
            race(prune_all_but_one, roll_back)
            # The prune removed the target first: the rollback is refused, CURRENT stays.
            assert refused and not (repository / VERSIONS_DIR / oldest).exists()
        assert_current_is_servable(repository)


@pytest.mark.parametrize("service_first", [True, False], ids=["service-first", "prune-first"])
def test_a_starting_service_keeps_the_version_it_chose(
    repository: Path, service_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's own start-up (`ModelReloader.start`: read CURRENT, load the graphs,
    lease) against a rollback followed by `prune --keep 0`, each slowed down between
    reading the repository and acting on it: the version the service chose is never
    removed under it, and it serves."""
    slowed(engine_module.Engine, "load_store", monkeypatch)  # the service: loading
    slowed(prune_module, "unique_bytes", monkeypatch)
    for _ in range(TRIES // 2):
        with_versions(repository, 2)
        newest = list_versions(repository)[-1].version
        oldest = list_versions(repository)[0].version
        served: list[Path] = []

        def start_service(served: list[Path] = served) -> None:
            models = ModelReloader(Settings(model_dir=repository, provider="cpu"), ServiceMetrics())

            async def serve() -> None:
                await models.start()
                served.append(models.live.engine.manifest.directory)
                assert served[0].is_dir(), f"{served[0].name} was pruned while it loaded"
                await models.stop()

            asyncio.run(serve())

        def switch_then_prune(target: str = oldest) -> None:
            operations.rollback(repository, target)
            prune_module.prune(repository, keep=0)

        if service_first:
            race(start_service, switch_then_prune)
            assert served[0].name == newest
        else:
            race(switch_then_prune, start_service)
        assert_current_is_servable(repository)
