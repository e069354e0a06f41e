"""The errors a user or operator can cause, in one torch-free module.

Command-line tools turn these into one line and exit code 2 (`training.commands.cli.run_cli`).
They live apart from the modules that raise them so that the torch-free commands
(`training.commands.store list` and `rollback`, which run inside the serving image) can
catch them without importing torch.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Arguments that parse but make no sense together (checked after parsing)."""


class BaseModelError(ValueError):
    """A base model directory that is missing, incomplete or not a BERT checkpoint."""


class BranchError(ValueError):
    """A branch directory that is missing, malformed, or does not fit the given base."""


class MergeError(ValueError):
    """Branches that cannot be merged, or a graph that fails its check."""
