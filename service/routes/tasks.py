"""Task routes: the generic `/v1/tasks/{task}` for any served task, `/v1/tasks` to list
them, `/v1/predict` to ask several tasks about one input (its frozen layers run once),
and the three named preset endpoints with their fixed contract.

Routes only translate: request bodies into `Inputs`, `TaskResult`s into response
bodies. Which tasks exist is read from the live model at request time, so tasks added
or removed by a reload are served (or 404) without a restart.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from service import schemas
from service.answers import answer
from service.inference import Infer, Inputs, TaskResult

ERRORS = {
    400: {"model": schemas.ErrorResponse, "description": "Body could not be parsed"},
    404: {"model": schemas.ErrorResponse, "description": "The model serves no such task"},
    413: {"model": schemas.ErrorResponse, "description": "Request body too large"},
    415: {"model": schemas.ErrorResponse, "description": "Body is not JSON"},
    422: {"model": schemas.ErrorResponse, "description": "Invalid input"},
    429: {"model": schemas.ErrorResponse, "description": "Overloaded: the queue is full"},
    503: {"model": schemas.ErrorResponse, "description": "Timed out, not ready or stopping"},
}
TASKS_PREFIX = "/v1/tasks"
TASK_ENDPOINT = TASKS_PREFIX + "/{task}"
# Several tasks about one input: inference like the task endpoints, under no one task.
MULTI_TASK_ENDPOINT = "/v1/predict"
# The presets' named endpoints, path -> task, as `_named_endpoint` registers them.
NAMED_TASK_ENDPOINTS: dict[str, str] = {}
TaskName = Path(description="a served task's name (GET /v1/tasks lists them)", max_length=48)


def _infer(request: Request) -> Infer:
    return request.app.state.infer


def json_response(body: BaseModel) -> Response:
    """The body, encoded once by its own model (pydantic's Rust encoder).

    A route that returns a model has FastAPI validate it again against the route's
    response_model (a union here) before encoding it: 12 us for one result, 53 us for 32,
    against 1 and 18 us for this (docs/results.md; orjson on the dumped dict is no
    faster). A Response is passed through as it is; response_model still documents it.
    """
    return Response(body.model_dump_json(), media_type="application/json")


def inputs_of(body: schemas.TaskRequest | schemas.MultiTaskRequest) -> tuple[Inputs, bool]:
    """The request's inputs, and whether it was the single-item shape."""
    if isinstance(body, schemas.TextRequest):
        return Inputs([body.text]), True
    if isinstance(body, schemas.TextBatchRequest):
        return Inputs(body.texts), False
    if isinstance(body, schemas.PairRequest):
        return Inputs([body.sentence1], [body.sentence2]), True
    return Inputs([p[0] for p in body.pairs], [p[1] for p in body.pairs]), False


def task_result(result: TaskResult):
    """A generic result body, by the task's kind (its fields: `service.answers`, which the
    offline scorer shares)."""
    body = _RESULT_BODIES[result.task.kind]
    return body(
        task=result.task.name,
        truncated=result.truncated,
        model_version=result.model_version,
        **answer(result.task, result.prediction.values),
    )


_RESULT_BODIES = {
    "classification": schemas.ClassificationResult,
    "binary": schemas.BinaryResult,
    "multilabel": schemas.MultilabelResult,
    "regression": schemas.RegressionResult,
    "embedding": schemas.EmbeddingResult,
}


def describe(task, version: str) -> schemas.TaskDescription:
    definition = task.definition
    return schemas.TaskDescription(
        name=task.name,
        kind=definition.kind,
        input=definition.input,
        labels=list(definition.label_names) if definition.label_names else None,
        range=list(definition.value_range) if definition.value_range else None,
        dimensions=definition.dimensions,
        thresholds=list(definition.thresholds) or None,
        version=version,
        layers=task.layers,
        fork_depth=task.fork_depth,
        endpoint=f"{TASKS_PREFIX}/{task.name}",
    )


router = APIRouter()


@router.get(TASKS_PREFIX, response_model=schemas.TaskList)
async def list_tasks(request: Request) -> schemas.TaskList:
    """The tasks the live model serves: kind, input, labels or range, branch version, K
    and fork depth; and the base's layers, those all tasks share and those the graph holds."""
    manifest = _infer(request).served_manifest()
    if manifest is None:
        return schemas.TaskList(tasks=[])
    return schemas.TaskList(
        tasks=[describe(task, task.branch_version) for task in manifest.tasks],
        num_layers=manifest.num_layers,
        shared_layers=manifest.trunk_layers,
        frozen_layers=manifest.frozen_layers,
    )


@router.post(
    MULTI_TASK_ENDPOINT,
    response_model=schemas.MultiTaskResponse | schemas.MultiTaskBatchResponse,
    responses={k: v for k, v in ERRORS.items() if k != 404},
)
async def predict_many(request: Request, body: schemas.MultiTaskRequest):
    """Several tasks about one input (`{"text"}` or `{"sentence1", "sentence2"}`) or a
    batch (`{"texts"}`, `{"pairs"}`), with `"tasks": [...]` (default: every served task
    taking that input shape). Each input's frozen layers run once and fan out to the
    tasks' branches; each answer equals the task's own endpoint's. An unknown task, a
    task of the other input shape or an empty list is a 422."""
    inputs, single = inputs_of(body)
    many = await _infer(request).predict_many(body.tasks, inputs)
    results = [{name: task_result(r) for name, r in row.items()} for row in many.answers]
    cost = {"tasks": many.tasks, "layer_evaluations": many.layer_evaluations}
    if single:
        return json_response(schemas.MultiTaskResponse(**cost, answers=results[0]))
    return json_response(schemas.MultiTaskBatchResponse(**cost, results=results))


@router.post(
    TASK_ENDPOINT,
    response_model=schemas.TaskResult | schemas.TaskBatchResponse,
    responses=ERRORS,
)
async def predict_task(request: Request, body: schemas.TaskRequest, task: str = TaskName):
    """Any served task: `{"text"}` or `{"texts"}` for text tasks, `{"sentence1",
    "sentence2"}` or `{"pairs"}` for pair tasks. Answers by kind: classification gives
    label, label_name and probabilities; binary the decision and its probability; multilabel
    the label names at or over their thresholds, every probability and the thresholds;
    regression a score within the task's range."""
    inputs, single = inputs_of(body)
    results = await _infer(request).predict(task, inputs)
    if single:
        return json_response(task_result(results[0]))
    return json_response(
        schemas.TaskBatchResponse(
            task=task,
            results=[task_result(r) for r in results],
            model_version=results[0].model_version,
        )
    )


# --- the named preset endpoints: their exact contract -----------------------------------


def sentiment_result(result: TaskResult) -> schemas.SentimentResponse:
    return schemas.SentimentResponse(
        label=result.label,
        label_name=result.label_name,
        probabilities=result.probabilities,
        truncated=result.truncated,
        model_version=result.model_version,
    )


def paraphrase_result(result: TaskResult) -> schemas.ParaphraseResponse:
    return schemas.ParaphraseResponse(
        is_paraphrase=result.score >= 0.5,
        probability=result.score,
        truncated=result.truncated,
        model_version=result.model_version,
    )


def similarity_result(result: TaskResult) -> schemas.SimilarityResponse:
    return schemas.SimilarityResponse(
        score=result.score, truncated=result.truncated, model_version=result.model_version
    )


def _named_endpoint(path: str, request_type, single_type, batch_type, to_body, summary: str):
    """A preset's named endpoint: the generic flow with the preset's own response shape."""
    task = path.strip("/")
    NAMED_TASK_ENDPOINTS[path] = task

    async def endpoint(request: Request, body):
        inputs, single = inputs_of(body)
        results = await _infer(request).predict(task, inputs)
        if single:
            return json_response(to_body(results[0]))
        return json_response(
            batch_type(
                results=[to_body(r) for r in results], model_version=results[0].model_version
            )
        )

    endpoint.__doc__ = summary
    # Real types, not the postponed strings of this module: FastAPI reads them per route.
    endpoint.__annotations__ = {"request": Request, "body": request_type}
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        name=task,
        response_model=single_type | batch_type,
        responses=ERRORS,
    )


_named_endpoint(
    "/sentiment",
    schemas.SentimentRequest | schemas.SentimentBatchRequest,
    schemas.SentimentResponse,
    schemas.SentimentBatchResponse,
    sentiment_result,
    "5-class sentiment (0 negative .. 4 positive) of one text or a batch.",
)
_named_endpoint(
    "/paraphrase",
    schemas.PairRequest | schemas.PairBatchRequest,
    schemas.ParaphraseResponse,
    schemas.ParaphraseBatchResponse,
    paraphrase_result,
    "Whether two questions are paraphrases, with the probability that they are.",
)
_named_endpoint(
    "/similarity",
    schemas.PairRequest | schemas.PairBatchRequest,
    schemas.SimilarityResponse,
    schemas.SimilarityBatchResponse,
    similarity_result,
    "Semantic similarity of two sentences, 0 (unrelated) to 5 (equivalent).",
)
