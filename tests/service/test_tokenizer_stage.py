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
    """Stands in for the engine: its encode waits for the test to let it go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.tokenizer = SimpleNamespace(max_chars=1000)
        self.started = threading.Event()

    def encode(self, texts_a, texts_b=None):
        self.started.set()
        self.release.wait(10)
        return []


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


def test_the_tokenizer_stage_counts_towards_the_request_timeout() -> None:
    engine = _BlockingEngine()
    infer = _infer(engine, timeout=0.3)

    async def scenario():
        with pytest.raises(ServiceError) as late:
            await infer._run(Inputs(["a text"]), _resolve)
        return late.value

    try:
        late = asyncio.run(scenario())
    finally:
        engine.release.set()
        infer.close()
    assert late.status == 503 and "no answer within 0.3 s" in late.detail
