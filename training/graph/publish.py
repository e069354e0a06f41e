"""Publish branches into a versioned model repository: a new immutable version.

The next version merges the given branches with the current version's other branches
(kept in the repository), less any removed task, and is made current unless told
otherwise; a running service picks it up on reload (POST /admin/reload or SIGHUP). The
tasks that were not replaced keep bit-identical outputs, whatever the new branch's
depth. A new repository is created from the given branches only when asked (`create`):
a mistyped path is refused instead. Each branch.json is read and checked once
(`read_branches`), on its way into the repository.

Publishing one task measures the graph variants' metrics for the changed tasks only
(`training.evaluate.incremental_metrics`: the others' recorded figures carry over), and
the new version's files that an earlier version holds byte for byte become hard links
to them (`model_store.dedupe`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from model_store.dedupe import link_identical_files
from model_store.manifest import Manifest, StoreError, load_manifest
from model_store.operations import BranchRef, check_publish_target, next_branches
from model_store.repository import (
    CURRENT_FILE,
    VERSIONS_DIR,
    new_version_id,
    resolve_store,
    set_current,
)
from training.encoders.base_model import load_base_model
from training.errors import UsageError
from training.evaluate.incremental_metrics import incremental_measurer
from training.fit.branch import BranchInfo, read_branch_info
from training.graph.merge import PROG as MERGE_LOG
from training.graph.merge import load_branches, publish_store, read_branches


@dataclass(frozen=True)
class Published:
    """What a publish made: the version's id, its manifest, and whether it is current."""

    version: str
    manifest: Manifest
    current: bool
    changed: tuple[str, ...] = ()  # the tasks given as branches (added or replaced)
    shared_bytes: int = 0  # bytes hard-linked to earlier versions' identical files


def _ref(info: BranchInfo) -> BranchRef:
    return BranchRef(info.task, info.version, info.path)


def previous_manifest(repository: Path) -> Manifest | None:
    """The current version's manifest (its recorded metrics are carried over for the
    tasks that did not change), or None for a new or older-format repository."""
    if not (repository / CURRENT_FILE).is_file():
        return None
    try:
        return load_manifest(resolve_store(repository), verify=False)
    except StoreError:
        return None


@contextlib.contextmanager
def quiet_log(name: str) -> Iterator[None]:
    """Only warnings from logger `name` while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def publish(
    repository: Path,
    branches: Sequence[Path] = (),
    remove: Sequence[str] = (),
    *,
    base_model: Path | None = None,
    variants: Sequence[str] = ("int8",),
    activate: bool = True,
    data_dir: Path | None = None,
    create: bool = False,
) -> Published:
    """Merge `branches` (version or task directories) into a new version of
    `repository`, without the `remove`d tasks; `variants` are the graphs besides fp32.
    A `repository` that is not one yet is refused unless `create`."""
    if not branches and not remove:
        raise UsageError("publish needs --branch (add or replace a task) or --remove TASK")
    check_publish_target(repository, create)
    new = read_branches(branches) if branches else []
    (repository / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    base = load_base_model(base_model)
    chosen = next_branches(repository, [_ref(info) for info in new], remove)
    given = {info.task: info for info in new}
    # The given branches were read above: only their place changes (the kept copy).
    infos = [
        replace(given[task], path=path) if task in given else read_branch_info(path)
        for task, path in chosen.items()
    ]
    version = new_version_id()
    measure = incremental_measurer(previous_manifest(repository), data_dir)
    with quiet_log(MERGE_LOG):  # its raw parity line is explained by publish_report
        manifest = publish_store(
            base,
            load_branches(infos, base),
            repository / VERSIONS_DIR / version,
            ["fp32", *variants],
            metrics=measure,
        )
    shared = link_identical_files(repository / VERSIONS_DIR / version)
    if activate:
        set_current(repository, version)
    return Published(version, manifest, activate, tuple(given), shared)
