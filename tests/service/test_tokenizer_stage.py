"""The tokenizer stage is bounded: texts are cut (by characters, far above what the
kept tokens need) before tokenizing, and the stage counts towards load shedding and the
request timeout."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from model_store.tokenizer import MAX_CHARS_PER_TOKEN, PairTokenizer
from service.inference import Infer, Inputs, ServiceError
from service.metrics import ServiceMetrics


def test_a_long_text_is_cut_before_tokenizing_with_the_same_tokens(tokenizer) -> None:
    huge = "a quiet and moving film , " * 40_000  # about 1 MB
    assert len(huge) > tokenizer.max_chars == 32 * MAX_CHARS_PER_TOKEN
    [cut] = tokenizer.encode([huge])
    full = tokenizer._tokenizer.encode(huge)
    assert cut.truncated and list(cut.input_ids) == full.ids
    [pair] = tokenizer.encode(["how do I cook rice"], [huge])
    full_pair = tokenizer._tokenizer.encode("how do I cook rice", huge)
    assert pair.truncated and list(pair.input_ids) == full_pair.ids


def test_short_texts_are_untouched(tokenizer: PairTokenizer) -> None:
    [row] = tokenizer.encode(["a quiet and moving film"])
    assert not row.truncated
    assert list(row.input_ids) == tokenizer._tokenizer.encode("a quiet and moving film").ids


def test_a_text_cut_short_of_the_maximum_length_is_still_flagged(tokenizer) -> None:
    """Whitespace stands for no token: a cut can leave fewer tokens than the maximum."""
    [row] = tokenizer.encode([" " * (tokenizer.max_chars + 10) + "film"])
    assert row.truncated and len(row) == 2  # [CLS] [SEP]


class _BlockingEngine:
    """Stands in for the engine: its encode (and its tokenizer's tokens, as /tokenize
    calls them) waits for the test to let it go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.tokenizer = SimpleNamespace(max_chars=1000, tokens=self._tokens)
        self.started = threading.Event()

    def encode(self, texts_a, texts_b=None):
        self.started.set()
        self.release.wait(10)
        return []

    def _tokens(self, texts):
        return self.encode(texts)


def _infer(engine, **limits) -> Infer:
    models = SimpleNamespace(live=SimpleNamespace(engine=engine, batcher=None))
    return Infer(models, ServiceMetrics(), 256, limits.pop("timeout", 30.0), **limits)


def _resolve(engine):
    return []


def test_the_tokenizer_stage_sheds_when_full() -> None:
    engine = _BlockingEngine()
    infer = _infer(engine, max_tokenizing_items=2, max_tokenizing_chars=10_000)

    async def scenario():
        first = asyncio.ensure_future(infer._run(Inputs(["x" * 5000, "y"]), _resolve))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        assert infer.tokenizing == (2, 1001)  # the long text counts up to its cut
        with pytest.raises(ServiceError) as refused:
            await infer._run(Inputs(["short"]), _resolve)
        engine.release.set()
        for _ in range(500):  # the stage is released when the thread is done
            if infer.tokenizing == (0, 0):
                break
            await asyncio.sleep(0.01)
        first.cancel()
        return refused.value

    try:
        refused = asyncio.run(scenario())
    finally:
        engine.release.set()
        infer.close()
    assert refused.status in (429, 503) and "tokenizer stage full" in refused.detail
    assert refused.headers == {"Retry-After": "1"}
    assert infer.tokenizing == (0, 0)


@pytest.mark.parametrize(
    "request_of",
    [
        lambda infer: infer._run(Inputs(["a text"]), _resolve),
        lambda infer: infer.tokenize(["a text"]),
    ],
    ids=["inference", "tokenize"],
)
def test_the_tokenizer_stage_counts_towards_the_request_timeout(request_of) -> None:
    engine = _BlockingEngine()
    infer = _infer(engine, timeout=0.3)

    async def scenario():
        with pytest.raises(ServiceError) as late:
            await request_of(infer)
        return late.value

    try:
        late = asyncio.run(scenario())
    finally:
        engine.release.set()
        infer.close()
    assert late.status == 503 and "no answer within 0.3 s" in late.detail


class _Recording:
    """Wraps a `tokenizers.Tokenizer`, recording the texts it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: list[str] = []

    def encode_batch(self, texts):
        self.seen += texts
        return self.inner.encode_batch(texts)


def test_tokens_of_a_long_text_are_cut_before_tokenizing(tokenizer, monkeypatch) -> None:
    """/tokenize reads a text as inference does: up to its cut, not its whole length."""
    huge = "a quiet and moving film , " * 40_000  # about 1 MB
    recording = _Recording(tokenizer._tokenizer)
    monkeypatch.setattr(tokenizer, "_tokenizer", recording)
    [row] = tokenizer.tokens([huge])
    assert max(len(text) for text in recording.seen) == tokenizer.max_chars < len(huge)
    full = recording.inner.encode(huge)
    assert [token.id for token in row] == full.ids
    assert [token.span for token in row if not token.special] == [
        offsets
        for offsets, special in zip(full.offsets, full.special_tokens_mask, strict=True)
        if not special
    ]


@pytest.mark.parametrize("holder", ["tokenize", "predict"])
def test_tokenize_shares_the_tokenizer_stage_and_its_bounds(holder: str) -> None:
    """A /tokenize request counts in the stage the task routes count in: while either
    holds it full, the other is shed (429, Retry-After) instead of queueing behind it."""
    engine = _BlockingEngine()
    infer = _infer(engine, max_tokenizing_items=2, max_tokenizing_chars=10_000)
    texts = ["x" * 5000, "y" * 600]

    async def scenario():
        if holder == "tokenize":
            first = asyncio.ensure_future(infer.tokenize(texts))
        else:
            first = asyncio.ensure_future(infer._run(Inputs(texts), _resolve))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        held = infer.tokenizing
        refused = []
        for call in (
            lambda: infer.tokenize(["z" * 600]),
            lambda: infer._run(Inputs(["z" * 600]), _resolve),
        ):
            with pytest.raises(ServiceError) as shed:
                await call()
            refused.append(shed.value)
        engine.release.set()
        await asyncio.gather(first, return_exceptions=True)  # the stand-in has no batcher
        return held, refused

    try:
        held, refused = asyncio.run(scenario())
    finally:
        engine.release.set()
        infer.close()
    assert held == (2, 1000 + 600)  # the long text counts up to its cut
    for shed in refused:
        assert shed.status == 429 and "tokenizer stage full" in shed.detail
        assert shed.headers == {"Retry-After": "1"}
    assert infer.tokenizing == (0, 0)
