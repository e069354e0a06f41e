"""Tokenization: cross-encoded pairs, longest-first truncation, padding, vocab fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model_store.tokenizer import PairTokenizer, TokenizerError

CLS, SEP, PAD = 101, 102, 0


def test_single_sentence_is_cls_text_sep(tokenizer: PairTokenizer) -> None:
    (row,) = tokenizer.encode(["Hello World"])
    assert row.input_ids[0] == CLS and row.input_ids[-1] == SEP
    assert len(row) == 4  # uncased: "hello", "world"
    assert not row.token_type_ids.any()
    assert not row.truncated


def test_pair_is_cross_encoded_with_segment_ids(tokenizer: PairTokenizer) -> None:
    (row,) = tokenizer.encode(["a cat sleeps"], ["the dog runs fast"])
    ids = row.input_ids.tolist()
    first_sep = ids.index(SEP)
    assert ids[0] == CLS and ids[-1] == SEP and first_sep == 4
    assert row.token_type_ids.tolist() == [0] * 5 + [1] * 5


def test_longest_first_truncation_flags_and_respects_max_len(base) -> None:
    short = PairTokenizer.from_dir(base.path, max_seq_len=12)
    long_text = " ".join(["word"] * 30)
    (row,) = short.encode([long_text], ["tiny pair"])
    assert len(row) == 12 and row.truncated
    # Longest-first: the short second segment keeps all its tokens.
    second = row.input_ids[row.token_type_ids == 1].tolist()
    assert second == short.encode(["tiny pair"])[0].input_ids[1:].tolist()
    (fits,) = short.encode(["tiny"], ["pair"])
    assert not fits.truncated


def test_pad_builds_masks_and_keeps_flags(tokenizer: PairTokenizer) -> None:
    batch = tokenizer.encode_batch(["one", "one two three four"])
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_type_ids.shape
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 6]
    assert (batch.input_ids[0, 3:] == PAD).all()
    assert batch.truncated.dtype == np.bool_ and not batch.truncated.any()


def test_pair_lists_of_different_lengths_are_refused(tokenizer: PairTokenizer) -> None:
    with pytest.raises(ValueError, match="2 first sentences but 1 second"):
        tokenizer.encode(["a", "b"], ["c"])


def test_vocab_txt_fallback_tokenizes_like_tokenizer_json(base, tmp_path: Path) -> None:
    shutil.copy(base.path / "vocab.txt", tmp_path / "vocab.txt")
    fallback = PairTokenizer.from_dir(tmp_path, max_seq_len=32)
    reference = PairTokenizer.from_dir(base.path, max_seq_len=32)
    texts_a, texts_b = ["Héllo, WORLD! It's 3pm."], ["Un-believable results..."]
    ours = fallback.encode_batch(texts_a, texts_b)
    theirs = reference.encode_batch(texts_a, texts_b)
    np.testing.assert_array_equal(ours.input_ids, theirs.input_ids)
    np.testing.assert_array_equal(ours.token_type_ids, theirs.token_type_ids)


def test_directory_without_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"neither tokenizer\.json nor vocab\.txt"):
        PairTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read tokenizer"):
        PairTokenizer.from_dir(tmp_path)
