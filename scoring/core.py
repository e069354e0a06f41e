"""Score one chunk of texts: length-sorted batches through the engine, answers in input
order. The single-process run and every Ray actor call this, so both give the same
answers; the engine (`service.engine`) and the answer fields (`service.answers`) are
the service's own, so both equal `/v1/tasks/{task}`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from model_store.manifest import Manifest, TaskEntry
from model_store.tokenizer import EncodedRow
from service.answers import FIELDS, answer
from service.engine import Engine, EngineConfig

TRUNCATED_COLUMN = "truncated"
ALL_TASKS = "all"


class ScoreError(ValueError):
    """A scoring run that cannot go on as asked (one line, shown to the user)."""


def engine_config(graph: str = "auto", provider: str = "auto", threads: int = 0) -> EngineConfig:
    """The engine settings of every scorer (single-process and Ray actors): ORT's
    per-shape memory patterns off, since a file brings ever new batch shapes and with
    them the memory would grow with the file (the answers are the same either way)."""
    return EngineConfig(
        graph=graph, provider=provider, intra_op_threads=threads, memory_pattern=False
    )


def resolve_tasks(manifest: Manifest, requested: Sequence[str], pair: bool) -> list[TaskEntry]:
    """The store's tasks asked for, in the order asked, repeats dropped; `all` means
    every task that takes the input's shape (one text, or a pair). It needs only the
    manifest (`load_manifest(store, verify=False)` reads it in milliseconds), so a
    wrong task is refused before the graph is loaded."""
    if list(requested) == [ALL_TASKS]:
        tasks = [t for t in manifest.tasks if t.pair == pair]
        if not tasks:
            shape = "text pairs" if pair else "single texts"
            raise ScoreError(f"no served task takes {shape}")
        return tasks
    by_name = {task.name: task for task in manifest.tasks}
    tasks = []
    for name in dict.fromkeys(requested):
        task = by_name.get(name)
        if task is None:
            served = ", ".join(sorted(by_name)) or "none"
            raise ScoreError(f"unknown task {name!r}; served tasks: {served}")
        if task.pair != pair:
            need = "--text-b-column (it takes text pairs)" if task.pair else "no --text-b-column"
            raise ScoreError(f"task {name} needs {need}")
        tasks.append(task)
    return tasks


def answer_columns(tasks: Sequence[TaskEntry]) -> list[str]:
    """The columns added to each row: `<task>_<field>` per task by its kind, then
    `truncated` (the input was longer than the store's maximum length)."""
    names = [f"{task.name}_{field}" for task in tasks for field in FIELDS[task.kind]]
    return [*names, TRUNCATED_COLUMN]


def batches(rows: Sequence[EncodedRow], batch_size: int, batch_tokens: int) -> Iterator[list[int]]:
    """Row positions in batches of similar length: sorted by length (stable), each
    batch at most `batch_size` rows and `batch_tokens` padded tokens (a longer single
    row still runs alone), as the service's batcher bounds its runs."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    batch: list[int] = []
    for position in order:
        width = len(rows[position])  # sorted: the longest so far
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > batch_tokens):
            yield batch
            batch = []
        batch.append(position)
    if batch:
        yield batch


def score_texts(
    engine: Engine,
    tasks: Sequence[TaskEntry],
    texts_a: Sequence[str],
    texts_b: Sequence[str] | None,
    batch_size: int = 32,
    batch_tokens: int = 16384,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, list[object]]:
    """Every task's answers for every text (or pair), as columns in input order. Each
    row asks all `tasks` at once: its frozen layers run once, then each task's branch.
    `on_batch(rows)` after each batch: progress that moves while a chunk is scored (a
    chunk of 8192 rows takes minutes on a CPU)."""
    columns = answer_columns(tasks)
    out: dict[str, list[object]] = {name: [None] * len(texts_a) for name in columns}
    if not texts_a:
        return out
    rows = engine.encode(texts_a, texts_b)
    task_set = tuple(task.task_id for task in tasks)
    for batch in batches(rows, batch_size, batch_tokens):
        predictions = engine.run([rows[i] for i in batch], [task_set] * len(batch))
        for position, prediction in zip(batch, predictions, strict=True):
            for task in tasks:
                for field, value in answer(task, prediction[task.name].values).items():
                    out[f"{task.name}_{field}"][position] = value
            out[TRUNCATED_COLUMN][position] = rows[position].truncated
        if on_batch is not None:
            on_batch(len(batch))
    return out
