"""Score a saved branch on a labelled file and print the metrics as JSON.

    python -m training.evaluate --branch model_store/branches/sentiment/<version> \\
        --data ../shared/data/sst-train.tsv

The branch is re-attached to its base model (checked by sha256) and run exactly as it
was validated during training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.tokenizer import PairTokenizer
from training.base_model import load_base_model
from training.branch import load_branch, resolve_branch_dir
from training.cli import OneLineArgumentParser, add_data_file_arguments, columns_for, run_cli
from training.data import SHARED_FILES, read_examples
from training.trainer import encode_examples, labels_of, predict, score
from training.trunk_cache import TrunkStates

PROG = "evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Print a branch's metrics on a file.")
    parser.add_argument("--branch", required=True, type=Path, help="branch version (or task) dir")
    parser.add_argument("--data", required=True, type=Path, help="labelled TSV/CSV/JSONL file")
    parser.add_argument("--base-model", type=Path, metavar="PATH", help="default: all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=64)
    add_data_file_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = load_base_model(args.base_model)
    model, info = load_branch(resolve_branch_dir(args.branch), base)
    spec = model.spec
    loaded = read_examples(
        args.data,
        columns_for(args, spec, SHARED_FILES[spec.name]),
        spec.parse_label,
        file_format=args.format,
        skip_bad_rows=args.skip_bad_rows,
    )
    tokenizer = PairTokenizer.from_dir(base.path, int(info.meta.get("max_seq_len", 128)))
    rows = encode_examples(tokenizer, spec, loaded.examples)
    states = TrunkStates(model, tokenizer, rows, budget_bytes=0)  # one pass: nothing to reuse
    outputs = predict(model, states, len(rows), args.batch_size)
    loss, metric = score(spec, outputs, labels_of(loaded.examples))
    report = {
        "task": spec.name,
        "branch": str(info.path),
        "version": info.version,
        "data": str(args.data),
        "examples": len(loaded.examples),
        "skipped_rows": loaded.skipped,
        spec.metric_name: metric,
        "loss": loss,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, None, PROG))
