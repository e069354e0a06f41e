"""What every command-line tool of the project shares: one-line errors, exit code 2.

A user mistake (bad option, missing file, malformed data, mismatched artifacts) must
end with one readable line on stderr, never a traceback; genuine bugs still raise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from model_store.atomic import ArtifactExistsError
from model_store.manifest import StoreError
from model_store.tokenizer import TokenizerError
from training.base_model import BaseModelError
from training.branch import BranchError
from training.data import Columns, DataError, DatasetFile
from training.tasks import TaskSpec

USAGE_EXIT_CODE = 2


class UsageError(ValueError):
    """Arguments that parse but make no sense together (checked after parsing)."""


USER_ERRORS = (
    UsageError,
    DataError,
    BaseModelError,
    BranchError,
    TokenizerError,
    ArtifactExistsError,
    StoreError,
)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, minus the usage dump on error: one line, and `--help` for the rest."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT_CODE, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None,
    prog: str,
    extra_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run `main`, turning user errors (and `extra_errors`) into one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return main(argv)
    except (*USER_ERRORS, *extra_errors) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def add_data_file_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for reading a task file other than the shared ones (CSV/TSV/JSONL)."""
    group = parser.add_argument_group("data file format")
    group.add_argument("--format", choices=("tsv", "csv", "jsonl"), help="default: from the suffix")
    group.add_argument("--text-a-column", help="column of the (first) sentence")
    group.add_argument("--text-b-column", help="column of the second sentence (pair tasks)")
    group.add_argument("--label-column", help="column of the label")
    group.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip and count malformed rows instead of stopping at the first",
    )


def columns_for(args: argparse.Namespace, spec: TaskSpec, default: DatasetFile) -> Columns:
    """The task file's default columns, with any column options applied."""
    columns = Columns(
        text_a=args.text_a_column or default.columns.text_a,
        text_b=(args.text_b_column or default.columns.text_b) if spec.pair else None,
        label=args.label_column or default.columns.label,
    )
    if args.text_b_column and not spec.pair:
        raise UsageError(f"--text-b-column given, but {spec.name} takes single sentences")
    return columns
