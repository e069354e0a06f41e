"""What every command-line tool of the project shares: one-line errors, exit code 2.

A user mistake (bad option, missing file, malformed data, mismatched artifacts) must
end with one readable line on stderr, never a traceback; an operating-system failure
(a full disk, a permission) is one line and exit code 1; genuine bugs still raise.
Torch-free, so that the commands that run in the serving image can use it.
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
from training.data.readers import Columns, DataError
from training.errors import BaseModelError, BranchError, MergeError, UsageError

USAGE_EXIT_CODE = 2
SYSTEM_EXIT_CODE = 1

__all__ = ["USAGE_EXIT_CODE", "OneLineArgumentParser", "UsageError", "run_cli"]

USER_ERRORS = (
    UsageError,
    DataError,
    BaseModelError,
    BranchError,
    MergeError,
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
    extra_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run `main`, turning user errors (and `extra_errors`) into one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with contextlib.suppress(ValueError):  # not the main thread (tests): keep the default
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except (*USER_ERRORS, *extra_errors) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except OSError as err:  # disk full, permission denied, ...: the operator's to fix
        where = f": {err.filename}" if err.filename else ""
        print(f"{prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return SYSTEM_EXIT_CODE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def add_data_file_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for reading a task file other than a preset's (CSV/TSV/JSONL)."""
    group = parser.add_argument_group("data file format")
    group.add_argument("--format", choices=("tsv", "csv", "jsonl"), help="default: from the suffix")
    group.add_argument("--text-a-column", help="column of the (first) text")
    group.add_argument("--text-b-column", help="column of the second text (pair tasks)")
    group.add_argument("--label-column", help="column of the label")
    group.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip and count malformed rows (bad labels, values out of range) instead of "
        "stopping at the first",
    )


def columns_for(args: argparse.Namespace, name: str, pair: bool, default: Columns) -> Columns:
    """`default` columns with any column options applied; a pair task needs two texts."""
    if args.text_b_column and not pair:
        raise UsageError(f"--text-b-column given, but task {name} takes a single text")
    columns = Columns(
        text_a=args.text_a_column or default.text_a,
        text_b=(args.text_b_column or default.text_b) if pair else None,
        label=args.label_column or default.label,
    )
    if pair and not columns.text_b:
        raise UsageError(f"task {name} takes a text pair: give its second column (--text-b-column)")
    return columns
