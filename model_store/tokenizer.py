"""Turn sentences and sentence pairs into BERT inputs, identically offline and online.

Training and serving must tokenize the same way or the served model silently differs
from the trained one, so this is the one place that does it, torch-free so that the
service can use it. Pairs are cross-encoded as `[CLS] a [SEP] b [SEP]` with
token_type_ids 0 for the first segment and 1 for the second; inputs longer than
`max_seq_len` are cut longest-first (the longer segment loses tokens first) and flagged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from model_store.manifest import sha256_of

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
DEFAULT_MAX_SEQ_LEN = 128
_MIN_SEQ_LEN = 3  # [CLS] x [SEP]: anything shorter cannot hold a single token of text
# Characters one token can stand for, at most: WordPiece reads a word of up to 100
# characters as pieces and a longer one as one [UNK], plus the space before the next.
# A text is cut to max_seq_len times this before tokenizing: generously more than any
# kept token needs, so normal texts keep exactly their tokens, while a 1 MB text no
# longer costs its whole length in tokenizer time and memory (docs/results.md).
MAX_CHARS_PER_TOKEN = 101


class TokenizerError(ValueError):
    """A tokenizer directory or file that cannot be used."""


@dataclass(frozen=True)
class EncodedRow:
    """One unpadded input row."""

    input_ids: np.ndarray  # int64 [length]
    token_type_ids: np.ndarray  # int64 [length]
    truncated: bool

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, string, whether it is special, and its characters."""

    id: int
    text: str
    special: bool
    span: tuple[int, int] | None


@dataclass(frozen=True)
class EncodedBatch:
    """Rows padded to the longest one: the three model inputs plus truncation flags."""

    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray  # int64 [batch, seq]
    truncated: np.ndarray  # bool [batch]


class PairTokenizer:
    """A WordPiece tokenizer with the truncation policy the models were trained with."""

    def __init__(self, tokenizer: Tokenizer, source: Path, max_seq_len: int) -> None:
        if max_seq_len < _MIN_SEQ_LEN:
            raise TokenizerError(f"max_seq_len must be at least {_MIN_SEQ_LEN}, got {max_seq_len}")
        # The padding id the tokenizer was saved with comes first: MPNet pads with <pad>
        # (id 1, which its position ids count from) although its vocabulary also holds
        # an unused [PAD]. BERT tokenizers without a padding setting use [PAD].
        padding = tokenizer.padding
        pad_id = padding["pad_id"] if padding else tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            raise TokenizerError(f"{source} has no [PAD] token: not a BERT tokenizer")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
        self._tokenizer = tokenizer
        self.source = source
        self.max_seq_len = max_seq_len
        self.pad_id = pad_id

    @classmethod
    def from_dir(
        cls, directory: str | Path, max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    ) -> PairTokenizer:
        """Load tokenizer.json from a checkpoint or store directory; fall back to vocab.txt."""
        directory = Path(directory)
        if (directory / TOKENIZER_FILE).is_file():
            return cls.from_file(directory / TOKENIZER_FILE, max_seq_len)
        vocab = directory / VOCAB_FILE
        if vocab.is_file():
            lowercase = _lowercase_setting(directory)
            try:
                wordpiece = BertWordPieceTokenizer(str(vocab), lowercase=lowercase)
            except Exception as err:  # the library raises plain Exceptions for bad vocabularies
                raise TokenizerError(f"cannot read {vocab}: {err}") from err
            return cls(wordpiece._tokenizer, vocab, max_seq_len)
        raise TokenizerError(f"{directory} has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")

    @classmethod
    def from_file(cls, path: str | Path, max_seq_len: int = DEFAULT_MAX_SEQ_LEN) -> PairTokenizer:
        path = Path(path)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the library raises plain Exceptions for unreadable files
            raise TokenizerError(f"cannot read tokenizer {path}: {err}") from err
        return cls(tokenizer, path, max_seq_len)

    @property
    def sha256(self) -> str:
        """Hash of the tokenizer definition, recorded so branches can be checked for a match."""
        return sha256_of(self.source)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as tokenizer.json (also when it was built from vocab.txt).

        The padding id is written into the file only where reading it back would
        otherwise pick another one (MPNet's <pad> beside an unused [PAD]), so BERT
        tokenizer files stay byte-identical to what earlier versions wrote.
        """
        if self.pad_id == self._tokenizer.token_to_id("[PAD]"):
            self._tokenizer.save(str(path))
            return
        pad_token = self._tokenizer.id_to_token(self.pad_id)
        self._tokenizer.enable_padding(pad_id=self.pad_id, pad_token=pad_token)
        try:
            self._tokenizer.save(str(path))
        finally:
            self._tokenizer.no_padding()

    def encode(
        self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None
    ) -> list[EncodedRow]:
        """Tokenize single sentences, or pairs when `texts_b` is given, without padding.
        Texts longer than `max_chars` are cut there first (and flagged truncated)."""
        limit = self.max_chars
        cut_a = [len(text) > limit for text in texts_a]
        first = [text[:limit] for text in texts_a]
        if texts_b is None:
            cut = cut_a
            encodings = self._tokenizer.encode_batch(first)
        else:
            if len(texts_a) != len(texts_b):
                raise ValueError(f"{len(texts_a)} first sentences but {len(texts_b)} second")
            cut = [a or len(b) > limit for a, b in zip(cut_a, texts_b, strict=True)]
            second = [text[:limit] for text in texts_b]
            encodings = self._tokenizer.encode_batch(list(zip(first, second, strict=True)))
        return [
            EncodedRow(
                input_ids=np.asarray(enc.ids, dtype=np.int64),
                token_type_ids=np.asarray(enc.type_ids, dtype=np.int64),
                truncated=bool(enc.overflowing) or was_cut,
            )
            for enc, was_cut in zip(encodings, cut, strict=True)
        ]

    @property
    def max_chars(self) -> int:
        """Characters of one text read at most: see MAX_CHARS_PER_TOKEN."""
        return self.max_seq_len * MAX_CHARS_PER_TOKEN

    def tokens(self, texts: Sequence[str]) -> list[list[Token]]:
        """Each text's tokens as the model sees them (truncated to the max length): id,
        token string, whether it is a special token, and its character span in the text
        as given (None for special tokens). Texts are cut to `max_chars` first, as for
        `encode`: the kept tokens are the same, and a prefix keeps every span."""
        limit = self.max_chars
        result = []
        for encoding in self._tokenizer.encode_batch([text[:limit] for text in texts]):
            row = []
            for token_id, token, special, (start, stop) in zip(
                encoding.ids,
                encoding.tokens,
                encoding.special_tokens_mask,
                encoding.offsets,
                strict=True,
            ):
                span = None if special else (start, stop)
                row.append(Token(token_id, token, bool(special), span))
            result.append(row)
        return result

    def pad(self, rows: Sequence[EncodedRow]) -> EncodedBatch:
        """Pad rows to the longest among them (right padding, mask 0 on padding)."""
        if not rows:
            raise ValueError("cannot pad an empty batch")
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row.input_ids
            token_type_ids[i, : len(row)] = row.token_type_ids
            attention_mask[i, : len(row)] = 1
        truncated = np.array([row.truncated for row in rows], dtype=bool)
        return EncodedBatch(input_ids, attention_mask, token_type_ids, truncated)

    def encode_batch(
        self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None
    ) -> EncodedBatch:
        return self.pad(self.encode(texts_a, texts_b))


def _lowercase_setting(directory: Path) -> bool:
    """Read do_lower_case from tokenizer_config.json; uncased is the BERT default."""
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TokenizerError(f"{config} is not valid JSON: {err}") from err
    return True
