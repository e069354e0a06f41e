"""Publish branches into a versioned model repository: a new immutable version.

The next version merges the given branches with the current version's other branches
(kept in the repository), less any removed task, and is made current unless told
otherwise; a running service picks it up on reload (POST /admin/reload or SIGHUP). The
tasks that were not replaced keep bit-identical outputs, whatever the new branch's
depth. A new repository is created from the given branches only when asked (`create`):
a mistyped path is refused instead. Each branch.json is read and checked once
(`read_branches`), on its way into the repository.

The whole read-CURRENT, merge, switch-CURRENT runs under the repository's writer lock
(`model_store.locking`), so two publishes at once each keep the other's update; a
refused publish removes the branch copies it made. Publishing one task exports only
that task's piece of the graphs and splices it into the current version's graphs
(`training.graph.splice`; built in full when that does not apply, and the output says
which), measures the graph variants' metrics for the changed tasks only
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
from model_store.graph_choice import tolerance_from_environment
from model_store.locking import repository_lock
from model_store.manifest import Manifest, StoreError, load_manifest
from model_store.operations import (
    BranchRef,
    check_publish_target,
    forget_branches,
    next_branches,
    remove_unused_branches,
)
from model_store.repository import (
    BRANCHES_DIR,
    CURRENT_FILE,
    VERSIONS_DIR,
    new_version_id,
    resolve_store,
    set_current,
)
from training.encoders.base_model import load_base_model, locate_recorded_base
from training.errors import UsageError
from training.evaluate.incremental_metrics import incremental_measurer
from training.fit.branch import BranchInfo, read_branch_info
from training.graph import merge
from training.graph.embedding import (
    DEFAULT_MAX_SEQ_LEN,
    EMBEDDING_TASK,
    temporary_embedding_branch,
)
from training.graph.graph_policy import decide_served_graphs
from training.graph.merge import read_branches

# A new repository's graphs besides fp32: int8 is what `--graph auto` serves on a CPU.
DEFAULT_VARIANTS = ("int8",)


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


def _max_seq_len(repository: Path, new: Sequence[BranchInfo]) -> int:
    """The max length an added embedding branch must share: the given branches', else
    the current version's, else the default."""
    if new:
        return int(new[0].meta.get("max_seq_len", DEFAULT_MAX_SEQ_LEN))
    if (repository / CURRENT_FILE).is_file():
        return load_manifest(resolve_store(repository), verify=False).max_seq_len
    return DEFAULT_MAX_SEQ_LEN


def _recorded_base(
    repository: Path, current: Manifest | None, new: Sequence[BranchInfo]
) -> str | None:
    """The base a publish with no --base-model runs on: the current version's (its
    branches and the given ones must share it), else the given branches'."""
    if current is not None:
        return locate_recorded_base(current.base_model, f"{repository}'s current version")
    if new:
        return new[0].locate_base()
    return None


def _variants_of(current: Manifest | None) -> tuple[str, ...]:
    """The graphs besides fp32 that the next version builds when none are named."""
    if current is None:
        return DEFAULT_VARIANTS
    return tuple(variant for variant in current.graphs if variant != "fp32")


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
    variants: Sequence[str] | None = None,
    activate: bool = True,
    data_dir: Path | None = None,
    embedding: bool = False,
    create: bool = False,
    graph_choice: str | None = None,
) -> Published:
    """Merge `branches` (version or task directories) into a new version of
    `repository`, without the `remove`d tasks. With no `base_model`, the base is the
    one the repository's current version runs on (else the given branches'), and with
    no `variants` (the graphs besides fp32) the current version's variants are kept
    (else int8): a publish of one task must not change what the others are served on.
    `embedding` adds (or refreshes) the base's sentence embedding task
    (`training.graph.embedding`), kept in the repository like any branch. A
    `repository` that is not one yet is refused unless `create`. The graph `--graph
    auto` serves stays what it was unless `graph_choice` says otherwise
    (`training.graph.graph_policy`: a publish that would move it is refused)."""
    if not branches and not remove and not embedding:
        raise UsageError(
            "publish needs --branch (add or replace a task), --embedding or --remove TASK"
        )
    check_publish_target(repository, create)
    new = read_branches(branches) if branches else []
    current = previous_manifest(repository)
    base = load_base_model(base_model if base_model else _recorded_base(repository, current, new))
    if variants is None:
        variants = _variants_of(current)
    try:
        tolerance = tolerance_from_environment()
    except ValueError as err:
        raise UsageError(str(err)) from None
    waiting = f"store: waiting for another publish into {repository} to finish"
    # One writer from reading CURRENT to switching it (model_store.locking).
    with contextlib.ExitStack() as scratch, repository_lock(repository, waiting):
        if embedding:
            if EMBEDDING_TASK in remove:
                raise UsageError(f"task {EMBEDDING_TASK} is both added (--embedding) and removed")
            path, handle = temporary_embedding_branch(base, _max_seq_len(repository, new))
            scratch.enter_context(handle)
            new.append(read_branch_info(path))
            merge.check_compatible(new)
        (repository / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        # What a killed publish left (no version uses it), unless it is given now.
        remove_unused_branches(repository, keep=[info.path for info in new])
        kept = [repository / BRANCHES_DIR / info.task / info.version for info in new]
        fresh = [path for path in kept if not path.exists()]
        try:
            chosen = next_branches(repository, [_ref(info) for info in new], remove)
            given = {info.task: info for info in new}
            # The given branches were read above: only their place changes (the kept copy).
            infos = [
                replace(given[task], path=path) if task in given else read_branch_info(path)
                for task, path in chosen.items()
            ]
            version = new_version_id()
            previous = previous_manifest(repository)
            measure = incremental_measurer(previous, data_dir)
            served = decide_served_graphs(previous, given, graph_choice, tolerance)
            with quiet_log(merge.log.name):  # its raw parity line is explained by publish_report
                manifest = merge.publish_store(
                    base,
                    merge.load_branches(infos, base),
                    repository / VERSIONS_DIR / version,
                    ["fp32", *variants],
                    metrics=measure,
                    previous=previous,
                    served=served,
                )
        except BaseException:
            forget_branches(fresh)  # a refused publish leaves no branch copy behind
            raise
        shared = link_identical_files(repository / VERSIONS_DIR / version)
        if activate:
            set_current(repository, version)
    return Published(version, manifest, activate, tuple(given), shared)
