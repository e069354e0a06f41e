"""Repository operations as plain functions, torch-free: choosing a version's branches,
keeping them, rolling back."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.cli import UsageError
from model_store.manifest import StoreError
from model_store.operations import (
    BranchRef,
    check_publish_target,
    describe_versions,
    next_branches,
    rollback,
)
from model_store.repository import BRANCHES_DIR, resolve_store


def test_next_branches_keeps_the_current_tasks_in_order_less_the_removed(repository: Path) -> None:
    chosen = next_branches(repository, [], ["paraphrase"])
    assert list(chosen) == ["sentiment", "similarity"]
    assert all(path.parent.parent == repository / BRANCHES_DIR for path in chosen.values())


def test_next_branches_keeps_a_new_branch_once(repository: Path, tmp_path: Path) -> None:
    source = tmp_path / "topic-v1"
    source.mkdir()
    (source / "branch.json").write_text("{}")
    chosen = next_branches(repository, [BranchRef("topic", "v1", source)], [])
    kept = repository / BRANCHES_DIR / "topic" / "v1"
    assert chosen["topic"] == kept and (kept / "branch.json").read_text() == "{}"
    assert list(chosen)[-1] == "topic"


@pytest.mark.parametrize(
    ("new", "remove", "fragment"),
    [
        ([], ["topic"], "cannot remove topic: the current version has no such task"),
        ([], ["sentiment", "paraphrase", "similarity"], "nothing would be left"),
        ([BranchRef("sentiment", "x", Path("."))], ["sentiment"], "both given as a branch"),
        (
            [BranchRef("sentiment", "x", Path(".")), BranchRef("sentiment", "y", Path("."))],
            [],
            "two branches given for one task",
        ),
    ],
)
def test_next_branches_refuses_what_makes_no_version(repository, new, remove, fragment) -> None:
    with pytest.raises(UsageError, match=fragment):
        next_branches(repository, new, remove)


def test_a_single_store_or_a_foreign_directory_is_no_publish_target(
    repository: Path, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="single store, not a repository"):
        check_publish_target(resolve_store(repository))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(UsageError, match="not a model repository"):
        check_publish_target(tmp_path / "other")
    # A new directory becomes a repository only when asked: a typo is refused.
    with pytest.raises(UsageError, match=r"not a model repository .*--create"):
        check_publish_target(tmp_path / "new")
    check_publish_target(tmp_path / "new", create=True)
    check_publish_target(repository)  # an existing repository needs no asking


def test_rollback_needs_an_earlier_version(repository: Path) -> None:
    (line,) = describe_versions(repository)
    assert line.startswith("* v") and "sentiment=" in line
    with pytest.raises(StoreError, match="no version before the current one"):
        rollback(repository)
