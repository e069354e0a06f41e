"""Wall time of the tiny training run the tests use: 64 examples, 3 epochs, K = 1.

python -m benchmarks.tiny_run_bench --data-dir ../shared/data --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common.report import print_report
from model_store.tokenizer import PairTokenizer
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.data.split import split_train_val
from training.encoders.base_model import load_base_model
from training.fit.objectives import preset_spec
from training.fit.trainer import TrainConfig, train_branch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    base = load_base_model()
    tokenizer = PairTokenizer.from_dir(base.path)
    rows = []
    for task in PRESETS:
        spec, dataset = preset_spec(task), PRESETS[task].data
        examples = read_examples(
            args.data_dir / dataset.filename, dataset.columns, spec.parse_label, limit=80
        ).examples
        train, val = split_train_val(examples, 0.2, seed=0)
        config = TrainConfig(layers=1, epochs=3, batch_size=16)
        seconds = [
            train_branch(base.encoder, tokenizer, spec, train, val, config, progress=False).seconds
            for _ in range(args.repeats)
        ]
        rows.append((task, len(train), 1, 3, f"{statistics.median(seconds):.2f}"))
    print_report(
        f"Tiny training run (median of {args.repeats})",
        ["task", "train examples", "K", "epochs", "seconds"],
        rows,
    )


if __name__ == "__main__":
    main()
