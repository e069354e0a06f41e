"""What every command-line tool of the project shares: one-line errors, exit code 2.

A user mistake (bad option, missing file, malformed data, mismatched artifacts) must
end with one readable line on stderr, never a traceback; an operating-system failure
(a full disk, a permission) is one line and exit code 1; genuine bugs still raise.
Torch-free and here, in the artifact package, so that the repository commands that run
in the serving image (`python -m model_store`) and the training commands share it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from model_store.atomic import ArtifactExistsError
from model_store.manifest import StoreError
from model_store.tasks import TaskDefinitionError
from model_store.tokenizer import TokenizerError

USAGE_EXIT_CODE = 2
SYSTEM_EXIT_CODE = 1


class UsageError(ValueError):
    """Arguments that parse but make no sense together (checked after parsing)."""


# The mistakes of an operator handling artifacts: every command reports them in one line.
STORE_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    TaskDefinitionError,
    TokenizerError,
    ArtifactExistsError,
    StoreError,
)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, minus the usage dump on error: one line, and `--help` for the rest."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT_CODE, f"{self.prog}: error: {message} (see --help)\n")


def _terminate(signum: int, _frame) -> NoReturn:
    """SIGTERM unwinds like Ctrl-C, so `finally` blocks remove half-built artifacts."""
    raise SystemExit(128 + signum)


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None,
    prog: str,
    user_errors: tuple[type[Exception], ...] = STORE_ERRORS,
) -> int:
    """Run `main`, turning `user_errors` into one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with contextlib.suppress(ValueError):  # not the main thread (tests): keep the default
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except user_errors as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except OSError as err:  # disk full, permission denied, ...: the operator's to fix
        where = f": {err.filename}" if err.filename else ""
        print(f"{prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return SYSTEM_EXIT_CODE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
