"""A mistyped --store is refused instead of silently becoming a new repository."""

from __future__ import annotations

from pathlib import Path

from model_store.repository import list_versions
from tests.support.commands import assert_one_line_error, run
from tests.support.tiny_store import TinyBranches


def test_publish_into_a_directory_that_is_not_a_repository_needs_create(
    tiny: TinyBranches, repository: Path
) -> None:
    typo = repository.parent / "defualt"
    branch = tiny.make("sentiment", 3)
    common = ["-m", "training.commands.store", "publish", "--base-model", str(tiny.base_dir)]
    refused = run(*common, "--store", str(typo), "--branch", str(branch))
    assert_one_line_error(refused, str(typo), "not a model repository", "--create")
    assert not typo.exists()
    created = run(*common, "--store", str(typo), "--branch", str(branch), "--create")
    assert created.returncode == 0, created.stderr
    assert [t.name for t in list_versions(typo)[0].manifest.tasks] == ["sentiment"]
    # An existing repository needs no --create (and takes it harmlessly).
    again = run(*common, "--store", str(repository), "--branch", str(branch), "--create")
    assert again.returncode == 0, again.stderr
