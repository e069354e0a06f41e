"""The encoder must match Hugging Face's BertModel: on the default base, and on
checkpoints saved in the other layouts found in the wild (prefixed keys, .bin files,
gamma/beta LayerNorm names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from training.encoders.base_model import BaseModelError, load_base_model
from training.encoders.bert import BertEncoder, run_layers

PARITY_TOLERANCE = 1e-5


def _inputs(vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A padded batch of pair-like rows with different lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [20, 7, 13, 3]
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    types = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1000, vocab_size, (length,), generator=generator)
        mask[row, :length] = 1
        types[row, length // 2 : length] = 1
    return input_ids, mask, types


def _max_diff_real_tokens(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    """Compare only real tokens: outputs at padding positions are unspecified."""
    return float((ours - theirs).abs()[mask.bool()].max())


def _reference(path: Path) -> transformers.BertModel:
    model = transformers.BertModel.from_pretrained(
        str(path), add_pooling_layer=False, attn_implementation="eager"
    )
    return model.eval()


def test_default_base_matches_transformers(base) -> None:
    input_ids, mask, types = _inputs(base.spec.config.vocab_size)
    with torch.no_grad():
        ours = base.encoder(input_ids, mask, types)
        theirs = _reference(base.path)(
            input_ids=input_ids, attention_mask=mask, token_type_ids=types
        ).last_hidden_state
    assert _max_diff_real_tokens(ours, theirs, mask) <= PARITY_TOLERANCE


def test_trunk_then_branch_layers_equal_the_full_stack(base) -> None:
    input_ids, mask, types = _inputs(base.spec.config.vocab_size, seed=1)
    encoder: BertEncoder = base.encoder
    with torch.no_grad():
        full = encoder(input_ids, mask, types)
        for depth in range(encoder.num_layers + 1):
            hidden = encoder.run_trunk(input_ids, mask, types, depth)
            split = run_layers(encoder.layers[depth:], hidden, mask)
            assert torch.equal(split, full), depth


def _tiny_config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=1100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_pretraining_checkpoint_with_prefixed_keys(
    tmp_path: Path, safe_serialization: bool
) -> None:
    torch.manual_seed(0)
    transformers.BertForPreTraining(_tiny_config()).save_pretrained(
        tmp_path, safe_serialization=safe_serialization
    )
    loaded = load_base_model(tmp_path)
    assert loaded.spec.num_layers == 3
    input_ids, mask, types = _inputs(1100)
    with torch.no_grad():
        ours = loaded.encoder(input_ids, mask, types)
        theirs = _reference(tmp_path)(
            input_ids=input_ids, attention_mask=mask, token_type_ids=types
        ).last_hidden_state
    assert _max_diff_real_tokens(ours, theirs, mask) <= PARITY_TOLERANCE


def test_legacy_gamma_beta_names_load_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = transformers.BertModel(_tiny_config(), add_pooling_layer=False)
    reference.save_pretrained(tmp_path / "modern")
    legacy = {
        "bert."
        + key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): tensor
        for key, tensor in reference.state_dict().items()
    }
    (tmp_path / "legacy").mkdir()
    torch.save(legacy, tmp_path / "legacy" / "pytorch_model.bin")
    (tmp_path / "legacy" / "config.json").write_text(
        (tmp_path / "modern" / "config.json").read_text()
    )
    modern, old = load_base_model(tmp_path / "modern"), load_base_model(tmp_path / "legacy")
    for key, tensor in modern.encoder.state_dict().items():
        assert torch.equal(tensor, old.encoder.state_dict()[key]), key


def test_checkpoint_missing_tensors_is_a_clear_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    transformers.BertModel(_tiny_config()).save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    del state["encoder.layer.2.output.dense.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(BaseModelError, match=r"lacks 1 encoder tensors: encoder\.layer\.2"):
        load_base_model(tmp_path)


def test_non_bert_and_missing_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="does not exist"):
        load_base_model(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(BaseModelError, match="only BERT"):
        load_base_model(tmp_path)
