"""Score a saved branch on a labelled file and print the metrics as JSON.

    bert-mts-evaluate --branch models/branches/sentiment/<version>
    bert-mts-evaluate --branch models/branches/topic --data more_topics.csv

Without `--data`, the branch is scored on its own validation split: the file, columns
and seeded split recorded in branch.json. With `--data`, on the whole given file, read
with the branch's recorded columns unless the column options say otherwise
(`training.evaluate.branch`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training.commands.cli import (
    OneLineArgumentParser,
    add_data_file_arguments,
    columns_for,
    run_cli,
)
from training.data.examples import CUSTOM_COLUMNS
from training.data.source import DataSource
from training.encoders.base_model import load_base_model
from training.evaluate.branch import recorded_source, score_branch, validation_split
from training.fit.branch import load_branch, read_branch_info, resolve_branch_dir

PROG = "bert-mts-evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Print a branch's metrics on a file.")
    parser.add_argument("--branch", required=True, type=Path, help="branch version (or task) dir")
    parser.add_argument(
        "--data", type=Path, help="labelled TSV/CSV/JSONL file (default: the validation split)"
    )
    parser.add_argument(
        "--base-model", type=Path, metavar="PATH", help="default: the base it was trained on"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    add_data_file_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = read_branch_info(resolve_branch_dir(args.branch))
    base = load_base_model(args.base_model or info.locate_base())
    model, info = load_branch(info, base)
    spec = model.spec
    if args.data is None:
        examples, loaded = validation_split(info, spec)
        shown = f"{recorded_source(info).path} (validation split)"
    else:
        # The recorded columns where branch.json has them, else a user file's defaults.
        recorded = info.meta.get("training_args", {}).get("data")
        default = DataSource.from_json(recorded).columns if recorded else CUSTOM_COLUMNS
        columns = columns_for(args, spec.name, spec.pair, default)
        source = DataSource(args.data, columns, args.format, args.skip_bad_rows)
        loaded = source.read(spec.parse_label)
        examples = loaded.examples
        shown = str(args.data)
    loss, metric = score_branch(model, info, base, examples, args.batch_size)
    report = {
        "task": spec.name,
        "branch": str(info.path),
        "version": info.version,
        "data": shown,
        "examples": len(examples),
        "skipped_rows": loaded.skipped,
        spec.metric_name: metric,
        "loss": loss,
    }
    print(json.dumps(report, indent=2))
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-evaluate`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
