"""The HTTP contract: request and response bodies of the task endpoints.

Clients (and `service.client`) depend on these shapes exactly. Each endpoint takes a
single item or a batch; unknown fields are refused so typos are not silently ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Non-empty after stripping; whitespace-only text carries nothing to classify.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Pair = Annotated[list[Text], Field(min_length=2, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SentimentRequest(_Strict):
    text: Text


class SentimentBatchRequest(_Strict):
    texts: Annotated[list[Text], Field(min_length=1)]


class PairRequest(_Strict):
    sentence1: Text
    sentence2: Text


class PairBatchRequest(_Strict):
    pairs: Annotated[list[Pair], Field(min_length=1)]


class _Result(BaseModel):
    truncated: bool = Field(description="the input was longer than the model's max length")
    model_version: str = Field(description="version of the task branch that answered")


class SentimentResponse(_Result):
    label: int = Field(ge=0, le=4)
    label_name: str
    probabilities: list[float] = Field(description="one per label, summing to 1")


class ParaphraseResponse(_Result):
    is_paraphrase: bool
    probability: float = Field(ge=0, le=1)


class SimilarityResponse(_Result):
    score: float = Field(ge=0, le=5)


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResponse]
    model_version: str


class ParaphraseBatchResponse(BaseModel):
    results: list[ParaphraseResponse]
    model_version: str


class SimilarityBatchResponse(BaseModel):
    results: list[SimilarityResponse]
    model_version: str


class ErrorResponse(BaseModel):
    detail: str | list


class TaskInfo(BaseModel):
    name: str
    version: str
    layers: int
    labels: list[str]


class ServiceInfo(BaseModel):
    model: str
    base_model: str
    tasks: list[TaskInfo]
    graph: str
    execution_provider: str
    batching: dict[str, float]
