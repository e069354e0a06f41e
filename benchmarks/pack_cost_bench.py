"""What shipping a branch with int8 row-wise weight matrices costs in validation metric.

    python -m benchmarks.pack_cost_bench --branch runs/tune/sentiment --branch runs/tune/similarity

For each trained (float32) branch: its validation metric on the seeded split it was
selected on (same file, fraction, seed and limit as recorded in branch.json), then the same
after encoding and decoding its weights as `training.graph.default_model pack` does, and
the weight bytes of both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save

from benchmarks.common.report import print_report
from model_store.tokenizer import PairTokenizer
from training.encoders.base_model import load_base_model
from training.evaluate.store import validation_examples
from training.fit.branch import load_branch, resolve_branch_dir
from training.fit.objectives import preset_spec
from training.fit.trainer import (
    TrainConfig,
    build_trunk_states,
    encode_examples,
    labels_of,
    predict,
)
from training.fit.weight_codec import decode_int8_rowwise, encode_int8_rowwise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", type=Path, action="append", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    base = load_base_model()
    rows = []
    for path in args.branch:
        model, info = load_branch(resolve_branch_dir(path), base)
        spec = preset_spec(info.task)
        tokenizer = PairTokenizer.from_dir(base.path, int(info.meta.get("max_seq_len", 128)))
        val = validation_examples(info.task, info.meta.get("training_args", {}), args.data_dir)
        encoded = encode_examples(tokenizer, spec, val)
        states = build_trunk_states(model, tokenizer, encoded, TrainConfig(layers=info.layers))
        labels = labels_of(val).numpy()
        before = spec.metric(predict(model, states, len(encoded), 64), labels)
        state = model.branch_state()
        packed = encode_int8_rowwise(state)
        model.load_branch_state(decode_int8_rowwise(packed))
        after = spec.metric(predict(model, states, len(encoded), 64), labels)
        rows.append(
            (
                info.task,
                info.layers,
                spec.metric_name,
                f"{before:.4f}",
                f"{after:.4f}",
                f"{after - before:+.4f}",
                f"{len(save({k: v.contiguous() for k, v in state.items()})) / 2**20:.1f}",
                f"{len(save(packed)) / 2**20:.1f}",
            )
        )
    print_report(
        "int8 row-wise branch weights: validation metric and size",
        ["task", "K", "metric", "float32", "int8 row-wise", "change", "MiB fp32", "MiB packed"],
        rows,
    )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
