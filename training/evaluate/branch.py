"""Score a saved branch on a labelled file and print the metrics as JSON.

    python -m training.evaluate.branch --branch models/branches/sentiment/<version>
    python -m training.evaluate.branch --branch models/branches/topic --data more_topics.csv

Without `--data`, the branch is scored on its own validation split: the file, columns
and seeded split recorded in branch.json. With `--data`, on the whole given file, read
with the branch's recorded columns unless the column options say otherwise. The branch
is re-attached to its base model (checked by sha256) and run exactly as it was
validated during training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.tokenizer import PairTokenizer
from training.commands.cli import (
    OneLineArgumentParser,
    UsageError,
    add_data_file_arguments,
    columns_for,
    run_cli,
)
from training.data.readers import DataSource, split_seed_of, split_train_val
from training.encoders.base_model import load_base_model
from training.fit.branch import load_branch, resolve_branch_dir
from training.fit.trainer import encode_examples, labels_of, predict, score
from training.fit.trunk_cache import TrunkStates

PROG = "evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Print a branch's metrics on a file.")
    parser.add_argument("--branch", required=True, type=Path, help="branch version (or task) dir")
    parser.add_argument(
        "--data", type=Path, help="labelled TSV/CSV/JSONL file (default: the validation split)"
    )
    parser.add_argument("--base-model", type=Path, metavar="PATH", help="default: all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=64)
    add_data_file_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = load_base_model(args.base_model)
    model, info = load_branch(resolve_branch_dir(args.branch), base)
    spec = model.spec
    training_args = info.meta.get("training_args", {})
    if "data" not in training_args:
        raise UsageError(f"{info.path} does not record its training data: pass --data FILE")
    recorded = DataSource.from_json(training_args["data"])
    if args.data is None:
        loaded = recorded.read(spec.parse_label, limit=training_args.get("limit"))
        examples = split_train_val(
            loaded.examples, training_args.get("val_fraction", 0.1), split_seed_of(training_args)
        )[1]
    else:
        columns = columns_for(args, spec.name, spec.pair, recorded.columns)
        source = DataSource(args.data, columns, args.format, args.skip_bad_rows)
        loaded = source.read(spec.parse_label)
        examples = loaded.examples
    tokenizer = PairTokenizer.from_dir(base.path, int(info.meta.get("max_seq_len", 128)))
    rows = encode_examples(tokenizer, spec, examples)
    states = TrunkStates(model, tokenizer, rows, budget_bytes=0)  # one pass: nothing to reuse
    outputs = predict(model, states, len(rows), args.batch_size)
    loss, metric = score(spec, outputs, labels_of(examples))
    report = {
        "task": spec.name,
        "branch": str(info.path),
        "version": info.version,
        "data": str(args.data or f"{recorded.path} (validation split)"),
        "examples": len(examples),
        "skipped_rows": loaded.skipped,
        spec.metric_name: metric,
        "loss": loss,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, None, PROG))
