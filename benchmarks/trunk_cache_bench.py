"""One training epoch on sst-train with and without the trunk cache, for K = 1, 2, 6.

    python -m benchmarks.trunk_cache_bench --data-dir ../shared/data

Without the cache every batch runs the frozen trunk again; with it, the trunk runs once
(the fill, timed separately) and each epoch runs only the top K layers. Both columns of
a row come from the same run, so their ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.common.report import print_report
from model_store.tokenizer import PairTokenizer
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.data.split import split_train_val
from training.encoders.base_model import load_base_model
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.fit.trainer import TrainConfig, build_trunk_states, encode_examples, train_branch


def time_epoch(base, tokenizer, spec, train, val, layers: int, cache: bool) -> float:
    """Seconds of one epoch's training loop (trunk fill and validation excluded)."""
    config = TrainConfig(layers=layers, epochs=1, trunk_cache=cache)
    result = train_branch(base.encoder, tokenizer, spec, train, val, config, progress=False)
    return result.history[0].seconds


def time_fill(base, tokenizer, spec, train, layers: int) -> float:
    model = TaskModel(base.encoder, spec, layers, "cls")
    rows = encode_examples(tokenizer, spec, train)
    started = time.perf_counter()
    build_trunk_states(model, tokenizer, rows, TrainConfig(layers=layers))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 6])
    parser.add_argument("--limit", type=int, help="first N examples only (quick look)")
    parser.add_argument("--repeats", type=int, default=1, help="median of this many epochs")
    args = parser.parse_args()

    spec = preset_spec("sentiment")
    base = load_base_model()
    tokenizer = PairTokenizer.from_dir(base.path)
    dataset = PRESETS["sentiment"].data
    loaded = read_examples(
        args.data_dir / dataset.filename, dataset.columns, spec.parse_label, limit=args.limit
    )
    train, val = split_train_val(loaded.examples, 0.1, seed=0)
    val = val[:64]  # validation is not what is measured: keep it short
    rows = []
    for layers in args.layers:
        uncached = [
            time_epoch(base, tokenizer, spec, train, val, layers, False)
            for _ in range(args.repeats)
        ]
        fill = statistics.median(
            time_fill(base, tokenizer, spec, train, layers) for _ in range(args.repeats)
        )
        cached = [
            time_epoch(base, tokenizer, spec, train, val, layers, True) for _ in range(args.repeats)
        ]
        off, on = statistics.median(uncached), statistics.median(cached)
        rows.append(
            (
                layers,
                len(train),
                round(off, 1),
                round(fill, 1),
                round(on, 1),
                f"{off / on:.2f}x",
                f"{off / (on + fill):.2f}x",
            )
        )
    print_report(
        f"Trunk cache: one training epoch on sst-train (seconds, median of {args.repeats})",
        [
            "K",
            "examples",
            "epoch, no cache",
            "cache fill (once)",
            "epoch, cached",
            "speedup per epoch",
            "speedup incl. fill",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
