"""Pruning and serving leases, torch-free (they run in the serving image): misuse of the
`prune` command is one line, a dead process's lease is ignored, and a repository where
no lease can be written still serves. Pruning with versions published by the training
half: tests/training/test_prune.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from model_store.leases import LEASES_DIR, ServingLease, leased_versions
from model_store.repository import resolve_store
from tests.support.commands import assert_one_line_error, run


def test_a_dead_process_lease_is_ignored(repository: Path) -> None:
    old = resolve_store(repository).name
    dead = 2**22 + 12345  # above the default pid_max: no such process
    leases = repository / LEASES_DIR
    leases.mkdir()
    record = {"version": old, "host": socket.gethostname(), "pid": dead, "since": "x"}
    (leases / f"{socket.gethostname()}-{dead}.json").write_text(json.dumps(record))
    elsewhere = {**record, "host": "another-host", "pid": 1}
    (leases / "another-host-1.json").write_text(json.dumps(elsewhere))
    assert leased_versions(repository) == {old: ["another-host-1.json"]}
    (leases / "another-host-1.json").unlink()
    assert leased_versions(repository) == {}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--keep", "-1"], "is not a count"),
        (["--keep", "two"], "is not a count"),
        ([], "--keep"),
    ],
)
def test_prune_misuse_is_one_line(repository: Path, args, fragment) -> None:
    result = run("-m", "model_store", "prune", "--store", str(repository), *args)
    assert_one_line_error(result, fragment)


def test_prune_of_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    result = run("-m", "model_store", "prune", "--store", str(tmp_path), "--keep", "1")
    assert_one_line_error(result, "not a model repository")


def test_a_repository_where_no_lease_can_be_written_still_serves(repository: Path, caplog) -> None:
    (repository / LEASES_DIR).write_text("not a directory")  # as a read-only volume would
    lease = ServingLease(repository)
    lease.hold(resolve_store(repository))  # warns, does not raise
    assert "cannot write the serving lease" in caplog.text
    lease.hold(resolve_store(repository))
    assert caplog.text.count("cannot write the serving lease") == 1
    lease.release()
