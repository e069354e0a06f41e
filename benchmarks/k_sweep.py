"""Validation metric and training time per branch depth K, per task.

    python -m benchmarks.k_sweep --data-dir ../shared/data --task similarity sentiment
    python -m benchmarks.k_sweep --task sentiment --layers --full   # full fine-tuning only
    python -m benchmarks.k_sweep --base-model all-mpnet-base-v2 --layers 2 4 8 \
        --json docs/report/k_sweep_base.json     # a 12-layer model's sweep, its own file

Trains one branch per (task, K) with the training defaults (3 epochs, lr 1e-4 for the
layers and 1e-3 for the head, batch 32, cached trunk, seed 0; each overridable) on the
seeded 90/10 split, and prints the best-epoch validation metric and the wall time of
each run. This is the sweep the method uses to pick K per task. `--full` adds the full
fine-tuning reference (every layer and the embeddings tuned). Branches are not saved;
`--json` adds the results to the file the accuracy report draws its K chart from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common.report import print_report
from model_store.tokenizer import PairTokenizer
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.data.split import split_train_val
from training.encoders.base_model import load_base_model
from training.fit.objectives import preset_spec
from training.fit.task_model import POOLINGS
from training.fit.trainer import PAIR_ORDERS, TrainConfig, train_branch
from training.report.sweep_log import FULL, SweepRecord, record_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--task", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--layers", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--full", action="store_true", help="also run full fine-tuning")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--pooling", choices=POOLINGS, default="cls")
    parser.add_argument("--pair-order", choices=PAIR_ORDERS, default="ab")
    parser.add_argument("--json", type=Path, help="add the results to this sweep file")
    parser.add_argument(
        "--base-model",
        help="the base to sweep (as training's --base-model; default: the packaged 6-layer "
        "one); each model's sweep goes to its own file, named in models/shipped/catalogue.json",
    )
    args = parser.parse_args()
    recipe = {
        "epochs": args.epochs,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "warmup": args.warmup,
        "pooling": args.pooling,
        "pair_order": args.pair_order,
    }

    base = load_base_model(args.base_model)
    tokenizer = PairTokenizer.from_dir(base.path)
    rows, records = [], []
    for task in args.task:
        spec, dataset = preset_spec(task), PRESETS[task].data
        loaded = read_examples(
            args.data_dir / dataset.filename,
            dataset.columns,
            spec.parse_label,
            skip_bad_rows=True,
        )
        train, val = split_train_val(loaded.examples, 0.1, seed=0)
        runs = [(layers, False) for layers in args.layers]
        if args.full:
            runs.append((base.encoder.num_layers, True))
        for layers, full in runs:
            config = TrainConfig(layers=layers, train_embeddings=full, **recipe)
            result = train_branch(base.encoder, tokenizer, spec, train, val, config, progress=False)
            records.append(
                SweepRecord(
                    task=task,
                    layers=FULL if full else layers,
                    metric=spec.metric_name,
                    value=round(result.best.val_metric, 4),
                    best_epoch=result.best_epoch,
                    minutes=round(result.seconds / 60, 2),
                    recipe=recipe,
                )
            )
            if args.json:
                record_sweep(args.json, records[-1:])
            rows.append(
                (
                    task,
                    FULL if full else layers,
                    spec.metric_name,
                    f"{result.best.val_metric:.4f}",
                    result.best_epoch,
                    f"{result.seconds / 60:.1f}",
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
    print_report(
        f"K sweep ({base.name}, {args.epochs} epochs, lr {args.lr:g}/{args.head_lr:g}, "
        f"warmup {args.warmup:g}, {args.pooling} pooling, pairs {args.pair_order}; "
        "seeded 10% validation split)",
        ["task", "K", "metric", "validation", "best epoch", "minutes"],
        rows,
    )


if __name__ == "__main__":
    main()
