"""What the training commands share: one-line errors (exit code 2) for every mistake a
user can make with data, bases, branches and artifacts, and the data-file options.

The plumbing itself (`OneLineArgumentParser`, `run_cli`) is torch-free and lives in
`model_store.cli`, which the serving image's commands use too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from model_store.cli import STORE_ERRORS, USAGE_EXIT_CODE, OneLineArgumentParser
from model_store.cli import run_cli as _run_cli
from training.data.examples import Columns, DataError
from training.errors import BaseModelError, BranchError, MergeError, UsageError

__all__ = ["USAGE_EXIT_CODE", "OneLineArgumentParser", "UsageError", "run_cli"]

USER_ERRORS = (*STORE_ERRORS, DataError, BaseModelError, BranchError, MergeError)


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None,
    prog: str,
    extra_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run `main`, turning user errors (and `extra_errors`) into one line and exit code 2."""
    return _run_cli(main, argv, prog, (*USER_ERRORS, *extra_errors))


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
