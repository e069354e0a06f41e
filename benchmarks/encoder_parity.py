"""Max |difference| between this project's encoder and transformers' BertModel/MPNetModel.

    python -m benchmarks.encoder_parity --data-dir ../shared/data
    python -m benchmarks.encoder_parity --base-model all-mpnet-base-v2   # after installing it

Runs both on real sentence pairs from sts-train (padded batches, both segments) and
reports the largest absolute difference of the last hidden state over real tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

from benchmarks.common.report import print_report
from model_store.tokenizer import PairTokenizer
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.encoders.base_model import load_base_model
from training.fit.objectives import preset_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--base-model", type=Path)
    parser.add_argument("--examples", type=int, default=256)
    args = parser.parse_args()

    base = load_base_model(args.base_model)
    family = base.spec.config.model_type
    reference_class = transformers.MPNetModel if family == "mpnet" else transformers.BertModel
    reference = reference_class.from_pretrained(
        str(base.path), add_pooling_layer=False, attn_implementation="eager"
    ).eval()
    tokenizer = PairTokenizer.from_dir(base.path)
    spec, dataset = preset_spec("similarity"), PRESETS["similarity"].data
    examples = read_examples(
        args.data_dir / dataset.filename, dataset.columns, spec.parse_label, limit=args.examples
    ).examples
    worst = 0.0
    for start in range(0, len(examples), 32):
        chunk = examples[start : start + 32]
        batch = tokenizer.encode_batch([e.text_a for e in chunk], [e.text_b for e in chunk])
        ids, mask, types = (
            torch.from_numpy(a)
            for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)
        )
        with torch.no_grad():
            ours = base.encoder(ids, mask, types)
            # MPNet takes no token types: our encoder is given them and must ignore them
            extra = {"token_type_ids": types} if family == "bert" else {}
            theirs = reference(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
        worst = max(worst, float((ours - theirs).abs()[mask.bool()].max()))
    print_report(
        f"Encoder parity with transformers.{reference_class.__name__} (last hidden state, fp32)",
        ["base model", "sentence pairs", "max abs difference", "tolerance"],
        [(base.name, len(examples), f"{worst:.2e}", "1e-05")],
    )


if __name__ == "__main__":
    main()
