"""The errors a user or operator can cause, in one torch-free module.

Command-line tools turn these into one line and exit code 2 (`model_store.cli.run_cli`).
They live apart from the modules that raise them so that a command can catch them
without importing torch first. `UsageError` is the artifact package's
(`model_store.cli`), shared by every command.
"""

from __future__ import annotations

from model_store.cli import UsageError

__all__ = ["BaseModelError", "BranchError", "ChecksumError", "MergeError", "UsageError"]


class BaseModelError(ValueError):
    """A base model directory that is missing, incomplete or not a BERT checkpoint."""


class BranchError(ValueError):
    """A branch directory that is missing, malformed, or does not fit the given base."""


class MergeError(ValueError):
    """Branches that cannot be merged, or a graph that fails its check."""


class ChecksumError(ValueError):
    """A built file differs from the committed checksum: not the released model."""
