"""A task the project has never heard of, end to end and live: trained from a CSV the
test writes, published into the repository of a running server, reloaded, answered,
listed and documented, the other tasks untouched; then removed again. And such a task,
a few hundred rows trained with the README's command and its default flags, learns."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_store.tasks import TaskDefinition
from model_store.tokenizer import PairTokenizer
from service.client import ApiError, AsyncClient, Client
from tests.support.commands import ROOT, run
from tests.support.live_repository import PROBES, probe, reload
from tests.support.readme import ADD_YOUR_OWN_TASK, block_commands, shell_block
from tests.support.samples import HELD_OUT_TOPICS, topic_rows
from tests.support.servers import ThreadedServer
from tests.support.tiny_store import TinyBranches
from training.fit.branch import load_branch, resolve_branch_dir, save_branch
from training.fit.objectives import task_spec
from training.fit.task_model import TaskModel
from training.fit.trainer import epochs_for

TOPICS = {"sports": "the striker scored a late goal", "politics": "the senate passed the bill"}
TOPICS["science"] = "the cells divided under the microscope"


def train_topic_branch(tiny: TinyBranches, directory: Path) -> Path:
    """`finetune_top_layers.py` on a user's CSV, as the README tells users to run it."""
    data = directory / "topics.csv"
    rows = ["text,topic"] + [
        f"{text} {i},{name if i % 2 else list(TOPICS).index(name)}"
        for i in range(24)
        for name, text in [list(TOPICS.items())[i % 3]]
    ]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = directory / "branches"
    result = run(
        str(ROOT / "training" / "finetune_top_layers.py"),
        *("--task", "topic", "--kind", "classification", "--labels", ",".join(TOPICS)),
        *("--train-file", str(data), "--label-column", "topic"),
        *("--base-model", str(tiny.base_dir), "--max-seq-len", "32"),
        *("--layers", "1", "--epochs", "1", "--out", str(out), "--quiet"),
    )
    assert result.returncode == 0, result.stderr
    return out / "topic"


def publish(tiny: TinyBranches, repository: Path, *args: str) -> None:
    command = ["-m", "training.commands.store", "publish", "--store", str(repository)]
    result = run(*command, "--base-model", str(tiny.base_dir), *args)
    assert result.returncode == 0, result.stderr


def test_a_user_task_is_added_live_answered_listed_and_removed(
    tiny: TinyBranches, repository: Path, live: ThreadedServer, tmp_path: Path
) -> None:
    topic_branch = train_topic_branch(tiny, tmp_path)
    with Client(live.url) as client:
        before = probe(client)
        with pytest.raises(ApiError) as unknown:
            client.predict("topic", "anything")
        assert unknown.value.status_code == 404
        assert "served tasks: paraphrase, sentiment, similarity" in unknown.value.detail

        publish(tiny, repository, "--branch", str(topic_branch))
        assert reload(client).json()["result"] == "loaded"

        answer = client.predict("topic", "the goalkeeper saved a penalty")
        assert answer.kind == "classification" and answer.task == "topic"
        assert answer.label_name == list(TOPICS)[answer.label]
        assert len(answer.probabilities) == 3 and abs(sum(answer.probabilities) - 1) < 1e-6
        batch = client.predict_batch("topic", ["a vote in parliament", "a new vaccine"])
        assert [r.label_name in TOPICS for r in batch.results] == [True, True]
        listed = {task.name: task for task in client.tasks()}
        assert listed["topic"].labels == list(TOPICS) and listed["topic"].input == "text"
        assert listed["topic"].endpoint == "/v1/tasks/topic" and listed["topic"].layers == 1
        assert "topic" in {task.name for task in client.info().tasks}
        assert "/v1/tasks/{task}" in client._http.get("/openapi.json").json()["paths"]
        wrong_shape = client._http.post("/v1/tasks/topic", json=PROBES["paraphrase"])
        assert wrong_shape.status_code == 422 and "one text" in wrong_shape.json()["detail"]
        assert probe(client) == before  # the other tasks answer bit-identically

        publish(tiny, repository, "--remove", "topic")
        assert reload(client).json()["result"] == "loaded"
        gone = client._http.post("/v1/tasks/topic", json={"text": "the striker scored"})
        assert gone.status_code == 404
        assert gone.json()["detail"].endswith("served tasks: paraphrase, sentiment, similarity")
        assert "topic" not in {task.name for task in client.tasks()}
        assert probe(client) == before


def test_a_regression_task_answers_within_its_range(
    tiny: TinyBranches, repository: Path, live: ThreadedServer
) -> None:
    rating = TaskDefinition(name="rating", kind="regression", input="text", value_range=(1, 10))
    torch.manual_seed(0)
    model = TaskModel(tiny.base.encoder, task_spec(rating), 1, "cls")
    with torch.no_grad():  # a head far outside the range: answers must still lie inside
        model.head.classifier.bias.fill_(100.0)
    branch = save_branch(model, tiny.base, tiny.tokenizer, tiny.out, {}, {})
    tiny.publish(repository, branch)
    with Client(live.url) as client:
        assert reload(client).status_code == 200
        answer = client.predict("rating", "a film")
        assert answer.kind == "regression" and answer.score == 10.0
        (described,) = [t for t in client.tasks() if t.name == "rating"]
        assert described.range == [1.0, 10.0] and described.labels is None


def test_the_async_client_serves_every_kind(live: ThreadedServer) -> None:
    async def ask() -> list:
        async with AsyncClient(live.url) as client:
            return [
                await client.predict("sentiment", "a fine film"),
                await client.predict("paraphrase", ("how do I cook", "how to cook")),
                await client.predict_batch("similarity", [("a", "b"), ("c", "d")]),
                await client.tasks(),
            ]

    sentiment, paraphrase, similarity, tasks = asyncio.run(ask())
    assert sentiment.kind == "classification" and len(sentiment.probabilities) == 5
    assert paraphrase.kind == "binary" and paraphrase.decision == (paraphrase.probability >= 0.5)
    assert paraphrase.label_name == ("paraphrase" if paraphrase.decision else "not_paraphrase")
    assert [r.kind for r in similarity.results] == ["regression", "regression"]
    assert all(0 <= r.score <= 5 for r in similarity.results)
    assert [t.name for t in tasks] == ["sentiment", "paraphrase", "similarity"]


def _serving_image_sources(directory: Path) -> Path:
    """The project files the Dockerfile's serving stage copies, and nothing else."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index("AS builder") : dockerfile.index("AS runtime")]
    for line in stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for pattern in sources:
                for source in ROOT.glob(pattern):
                    target = directory / source.relative_to(ROOT)
                    if source.is_dir():
                        shutil.copytree(
                            source, target, ignore=shutil.ignore_patterns("__pycache__")
                        )
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(source, target)
    return directory


def test_store_list_and_rollback_run_in_the_serving_image_without_torch(
    repository: Path, tiny, tmp_path: Path
) -> None:
    tiny.publish(repository, tiny.make("sentiment", 7))
    image = _serving_image_sources(tmp_path / "image")
    assert (image / "service").is_dir() and (image / "model_store" / "commands.py").is_file()
    assert not (image / "training").exists()  # the serving image needs no file of training/
    blocked = "import sys; sys.modules['torch'] = None; import runpy; "
    for args in (["list"], ["rollback"]):
        code = blocked + (
            f"sys.argv = ['store', *{args!r}, '--store', {str(repository)!r}]; "
            "runpy.run_module('model_store', run_name='__main__')"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(image)!r}); " + code,
            ],
            cwd=image,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    assert "current version" in result.stdout


def test_removing_a_task_the_store_does_not_serve_is_one_line(
    tiny: TinyBranches, repository: Path
) -> None:
    result = run(
        *("-m", "training.commands.store", "publish", "--store", str(repository)),
        *("--base-model", str(tiny.base_dir), "--remove", "topic"),
    )
    assert result.returncode == 2 and "cannot remove topic" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_small_task_of_ones_own_learns_with_the_readmes_command(base, tmp_path: Path) -> None:
    """150 rows of three topics, trained as the README's "Add your own task" prints it
    (its file and output paths are the only substitutions; the base is the packaged
    6-layer one, as in every test): held-out sentences of every topic come back right
    and, most of them, confident. With 3 epochs and the first of tied epochs kept, the
    branch answered near the label frequencies (0.42 / 0.27 / 0.32)."""
    data = tmp_path / "topics.csv"
    data.write_text(
        "text,topic\n" + "".join(f"{text},{topic}\n" for text, topic in topic_rows(150)),
        encoding="utf-8",
    )
    (command,) = [
        line for line in block_commands(shell_block(ADD_YOUR_OWN_TASK)) if "bert-mts-train" in line
    ]
    command = command.replace("topics.csv", str(data))
    program, *args = shlex.split(command)
    args += ["--out", str(tmp_path)]  # the page's default, models/branches, is the checkout's
    assert program.endswith("bert-mts-train"), command
    result = run("-m", "training.commands.train", *args)
    assert result.returncode == 0, result.stderr

    model, info = load_branch(resolve_branch_dir(tmp_path / "topic"), base)
    validation = info.meta["validation"]
    recorded = info.meta["training_args"]
    epochs = recorded["epochs"]  # more than 3: by the file's size
    assert epochs == epochs_for(recorded["train_examples"], recorded["batch_size"]) > 3
    # The validation split is 15 rows: the lowest validation loss picks the epoch.
    losses = [epoch["val_loss"] for epoch in validation["history"]]
    assert validation["selected_by"] == "loss" and len(losses) == epochs
    assert losses[validation["best_epoch"] - 1] == min(losses)

    tokenizer = PairTokenizer.from_dir(base.path, int(info.meta["max_seq_len"]))
    names = list(info.definition.label_names)
    for topic, texts in HELD_OUT_TOPICS.items():
        batch = tokenizer.encode_batch(texts)
        with torch.no_grad():
            outputs = model(
                torch.from_numpy(batch.input_ids),
                torch.from_numpy(batch.attention_mask),
                torch.from_numpy(batch.token_type_ids),
            )
        probabilities = outputs.softmax(dim=-1)
        answers = [names[i] for i in probabilities.argmax(dim=-1).tolist()]
        assert answers == [topic] * len(texts), (topic, texts, answers)
        confident = int((probabilities.max(dim=-1).values >= 0.6).sum())
        assert confident >= len(texts) - 1, (topic, probabilities.tolist())
