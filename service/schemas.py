"""The HTTP contract: request and response bodies.

Clients (and `service.client`) depend on these shapes exactly. Every task endpoint takes
a single item or a batch; unknown fields are refused so typos are not silently ignored.
The three named endpoints (/sentiment, /paraphrase, /similarity) keep their own
response shapes; the generic ones (/v1/tasks/{task}) answer by the task's kind.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from model_store.tasks import KINDS

# Non-empty after stripping; whitespace-only text carries nothing to classify.
# (pydantic refuses strings holding lone surrogates, e.g. "\ud800", as invalid.)
# The pattern says the same in the OpenAPI schema, so a schema-valid body is never a
# whitespace-only text: one character that is not whitespace for Python's str.strip
# (\s, plus the separators \x1c-\x1f that regex engines do not count as whitespace).
_NOT_BLANK = r"[^\s\x1c-\x1f]"
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, pattern=_NOT_BLANK)]
Pair = Annotated[list[Text], Field(min_length=2, max_length=2)]
# The same check without the stripping: for routes that answer positions in the text
# (/tokenize's offsets), which must index the text exactly as the client sent it.
TextAsSent = Annotated[str, StringConstraints(min_length=1, pattern=_NOT_BLANK)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextRequest(_Strict):
    text: Text


class TextBatchRequest(_Strict):
    texts: Annotated[list[Text], Field(min_length=1)]


class PairRequest(_Strict):
    sentence1: Text
    sentence2: Text


class PairBatchRequest(_Strict):
    pairs: Annotated[list[Pair], Field(min_length=1)]


# The preset endpoint's names for the text shapes (kept for the OpenAPI document).
SentimentRequest = TextRequest
SentimentBatchRequest = TextBatchRequest
TaskRequest = TextRequest | TextBatchRequest | PairRequest | PairBatchRequest


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


# --- generic task endpoints -------------------------------------------------------------


class _TaskResult(_Result):
    task: str


class ClassificationResult(_TaskResult):
    kind: Literal["classification"] = "classification"
    label: int = Field(ge=0, description="index of the most probable label")
    label_name: str
    probabilities: list[float] = Field(description="one per label, in label order, summing to 1")


class BinaryResult(_TaskResult):
    kind: Literal["binary"] = "binary"
    decision: bool = Field(description="probability >= 0.5")
    label_name: str = Field(description="the positive label if decision, else the negative")
    probability: float = Field(ge=0, le=1, description="probability of the positive label")


class MultilabelResult(_TaskResult):
    kind: Literal["multilabel"] = "multilabel"
    label_names: list[str] = Field(description="the labels at or over their thresholds")
    probabilities: list[float] = Field(description="one per label, in label order (sigmoids)")
    thresholds: list[float] = Field(description="one per label, tuned on validation")


class RegressionResult(_TaskResult):
    kind: Literal["regression"] = "regression"
    score: float = Field(description="within the task's value range")


class EmbeddingResult(_TaskResult):
    kind: Literal["embedding"] = "embedding"
    embedding: list[float] = Field(description="the base's sentence embedding, L2-normalised")


TaskResult = Annotated[
    ClassificationResult | BinaryResult | MultilabelResult | RegressionResult | EmbeddingResult,
    Field(discriminator="kind"),
]


class TaskBatchResponse(BaseModel):
    task: str
    results: list[TaskResult]
    model_version: str


class TaskDescription(BaseModel):
    name: str
    kind: Literal[KINDS]  # type: ignore[valid-type]
    input: Literal["text", "pair"]
    labels: list[str] | None = Field(
        None, description="classification, binary and multilabel tasks"
    )
    thresholds: list[float] | None = Field(None, description="multilabel tasks: one per label")
    range: list[float] | None = Field(None, description="regression tasks: [low, high]")
    dimensions: int | None = Field(None, description="embedding tasks: the vector's size")
    version: str = Field(description="version of the task branch")
    layers: int = Field(description="K: the tuned top layers of the task's branch")
    fork_depth: int = Field(
        description="frozen base layers below the task's branch (L - K): where it forks"
    )
    endpoint: str


class TaskList(BaseModel):
    tasks: list[TaskDescription]
    # None while no model is loaded (then `tasks` is empty too).
    num_layers: int | None = Field(None, description="L: the layers of the base encoder")
    shared_layers: int | None = Field(
        None, description="frozen layers every task shares (the shallowest fork depth)"
    )
    frozen_layers: int | None = Field(
        None, description="frozen layers the graph holds, once: up to the deepest fork"
    )


# --- multi-task requests: one input, several tasks -------------------------------------

TaskNames = Annotated[
    list[Annotated[str, StringConstraints(max_length=48)]] | None,
    Field(
        max_length=64,
        description="tasks to answer (default: every served task taking this input shape)",
    ),
]


class MultiTextRequest(TextRequest):
    tasks: TaskNames = None


class MultiTextBatchRequest(TextBatchRequest):
    tasks: TaskNames = None


class MultiPairRequest(PairRequest):
    tasks: TaskNames = None


class MultiPairBatchRequest(PairBatchRequest):
    tasks: TaskNames = None


MultiTaskRequest = (
    MultiTextRequest | MultiTextBatchRequest | MultiPairRequest | MultiPairBatchRequest
)


class _MultiTaskCost(BaseModel):
    tasks: list[str] = Field(description="the tasks answered, in the order asked")
    layer_evaluations: int = Field(
        description="encoder layers run per input for these tasks: the frozen layers up to "
        "the deepest fork once, plus each task's K (asking each task alone costs L each)"
    )


class MultiTaskResponse(_MultiTaskCost):
    answers: dict[str, TaskResult] = Field(description="by task name")


class MultiTaskBatchResponse(_MultiTaskCost):
    results: list[dict[str, TaskResult]] = Field(description="per input, answers by task name")


# --- operations -------------------------------------------------------------------------


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
    graph_reason: str = Field(description="why this graph variant is served")
    execution_provider: str
    batching: dict[str, int | float]
