"""Distillation: a student learns from a deeper teacher branch of the same task.

The claims tested: it brings the student closer to its teacher than label-only training
does; alpha = 0 is exactly label-only training (the teacher pass leaves the random
stream alone); it is reproducible; a teacher that cannot teach this student is one
line, exit 2; branch.json says which teacher taught, at which T and alpha.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from model_store.tasks import TaskDefinition
from tests.support.commands import ROOT, assert_one_line_error, run
from tests.support.tiny_store import tiny_base_dir
from training.data.examples import Example
from training.data.split import split_seed_of
from training.encoders.base_model import load_base_model
from training.errors import BranchError
from training.fit.branch import BRANCH_META, read_branch_info, save_branch
from training.fit.distill import Distillation, DistillConfig, load_teacher, soft_loss
from training.fit.objectives import preset_spec, task_spec
from training.fit.task_model import TaskModel
from training.fit.trainer import TrainConfig, encode_examples, predict, train_branch
from training.fit.trunk_cache import TrunkStates
from training.graph.merge import validation_entry

from .test_training import FAST, sentiment_examples, similarity_examples

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def _teacher(base, tokenizer, task: str, tmp_path: Path, seed: int = 0) -> Path:
    """A K=2 branch whose outputs the labels do not teach: random layers and a head
    sharpened tenfold. A student can only come close to it by listening to it."""
    torch.manual_seed(seed)
    model = TaskModel(base.encoder, preset_spec(task), 2, "cls")
    with torch.no_grad():
        model.head.classifier.weight.mul_(10)
    return save_branch(model, base, tokenizer, tmp_path / "teachers", {}, {})


def _outputs(model: TaskModel, tokenizer, examples) -> torch.Tensor:
    rows = encode_examples(tokenizer, model.spec, examples)
    return torch.from_numpy(predict(model, TrunkStates(model, tokenizer, rows, 0), len(rows), 32))


def paraphrase_examples(count: int, seed: int = 0) -> list[Example]:
    return [replace(e, label=e.label / 5) for e in similarity_examples(count, seed)]


@pytest.mark.parametrize(
    ("task", "examples"),
    [
        ("sentiment", sentiment_examples),
        ("paraphrase", paraphrase_examples),
        ("similarity", similarity_examples),
    ],
)
def test_distillation_brings_the_student_closer_to_its_teacher(
    base, tokenizer, tmp_path: Path, task, examples
) -> None:
    spec = preset_spec(task)
    train, val = examples(64), examples(32, seed=5)
    teacher = load_teacher(_teacher(base, tokenizer, task, tmp_path), base, tokenizer, spec)
    config = TrainConfig(layers=1, seed=3, **FAST)
    plain = train_branch(base.encoder, tokenizer, spec, train, val, config, False).model
    taught = train_branch(
        base.encoder,
        tokenizer,
        spec,
        train,
        val,
        config,
        False,
        distillation=Distillation(teacher, DistillConfig()),
    ).model

    target = _outputs(teacher.model, tokenizer, val)

    def distance(model: TaskModel) -> float:  # the soft term at T = 2, on unseen examples
        return float(soft_loss(spec.kind, _outputs(model, tokenizer, val), target, 2.0))

    assert distance(taught) < 0.8 * distance(plain)


def test_alpha_zero_is_label_only_training_and_runs_repeat(base, tokenizer, tmp_path) -> None:
    train, val = sentiment_examples(32), sentiment_examples(8, seed=5)
    spec = preset_spec("sentiment")
    teacher = load_teacher(_teacher(base, tokenizer, "sentiment", tmp_path), base, tokenizer, spec)
    config = TrainConfig(layers=1, seed=4, **{**FAST, "epochs": 1})

    def weights(distillation: Distillation | None) -> dict[str, torch.Tensor]:
        result = train_branch(
            base.encoder, tokenizer, spec, train, val, config, False, distillation=distillation
        )
        return result.model.branch_state()

    plain = weights(None)
    silent = weights(Distillation(teacher, DistillConfig(alpha=0.0)))
    taught = weights(Distillation(teacher, DistillConfig(alpha=0.7)))
    again = weights(Distillation(teacher, DistillConfig(alpha=0.7)))
    assert all(torch.equal(plain[k], silent[k]) for k in plain)
    assert all(torch.equal(taught[k], again[k]) for k in taught)
    assert not all(torch.equal(plain[k], taught[k]) for k in plain)


def test_soft_loss_is_smallest_at_the_teacher() -> None:
    """Each kind's soft term is minimised by the teacher's own outputs (cross-entropy to
    soft targets is KL plus the teacher's entropy, a constant)."""
    torch.manual_seed(0)
    for kind, width in (("classification", 5), ("binary", 1), ("regression", 1)):
        teacher = torch.randn(16, width)
        at_teacher = soft_loss(kind, teacher, teacher, 2.0)
        for _ in range(5):
            assert soft_loss(kind, teacher + 0.3 * torch.randn(16, width), teacher, 2.0) > (
                at_teacher
            )
    logits = torch.randn(16, 5)
    expected = F.kl_div(
        F.log_softmax(logits / 2, -1), F.softmax(logits.flip(0) / 2, -1), reduction="batchmean"
    )
    entropy = -(F.softmax(logits.flip(0) / 2, -1) * F.log_softmax(logits.flip(0) / 2, -1))
    assert soft_loss("classification", logits, logits.flip(0), 2.0) == pytest.approx(
        4 * (float(expected) + float(entropy.sum(-1).mean())), rel=1e-5
    )


def test_a_teacher_of_another_definition_base_or_tokenizer_is_refused(
    base, tokenizer, tmp_path: Path
) -> None:
    topic = TaskDefinition("topic", "classification", "text", ("a", "b", "c"))
    narrower = TaskDefinition("topic", "classification", "text", ("a", "b"))
    torch.manual_seed(0)
    saved = save_branch(
        TaskModel(base.encoder, task_spec(narrower), 1, "cls"), base, tokenizer, tmp_path, {}, {}
    )
    with pytest.raises(BranchError, match="task definition"):
        load_teacher(saved, base, tokenizer, task_spec(topic))
    with pytest.raises(BranchError, match="task definition"):
        load_teacher(saved, base, tokenizer, preset_spec("sentiment"))
    tiny = load_base_model(tiny_base_dir(tmp_path / "tiny"))
    with pytest.raises(BranchError, match="base"):
        load_teacher(saved, tiny, tokenizer, task_spec(narrower))
    meta = json.loads((saved / BRANCH_META).read_text())
    meta["tokenizer_sha256"] = "0" * 64
    (saved / BRANCH_META).write_text(json.dumps(meta))
    with pytest.raises(BranchError, match="tokenizer"):
        load_teacher(saved, base, tokenizer, task_spec(narrower))


def test_cli_distils_and_records_the_teacher(
    base, tokenizer, data_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    teacher = save_branch(
        TaskModel(base.encoder, preset_spec("sentiment"), 2, "cls"),
        base,
        tokenizer,
        tmp_path / "teachers",
        {"metric": "accuracy", "value": 0.5},
        {},
    )
    common = [
        FINETUNE,
        "--task",
        "sentiment",
        "--data-dir",
        str(data_dir),
        "--limit",
        "40",
        "--epochs",
        "1",
        "--quiet",
    ]
    result = run(
        *common,
        "--layers",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--teacher",
        str(teacher.parent),
        "--distill-temperature",
        "3",
        "--distill-alpha",
        "0.25",
        "--seed",
        "5",
        "--split-seed",
        "0",
    )
    assert result.returncode == 0, result.stderr
    (student,) = (tmp_path / "out" / "sentiment").iterdir()
    recorded = json.loads((student / BRANCH_META).read_text())["training_args"]["distillation"]
    assert recorded["temperature"] == 3.0 and recorded["alpha"] == 0.25
    teacher_meta = json.loads((teacher / BRANCH_META).read_text())
    assert recorded["teacher"]["version"] == teacher_meta["version"]
    assert recorded["teacher"]["weights_sha256"] == teacher_meta["weights_sha256"]
    assert recorded["teacher"]["layers"] == 2

    # A seed sweep keeps one validation split: the run records it, and evaluation and
    # publishing score the branch on that split, not on one drawn with the training seed.
    info = read_branch_info(student)
    assert (info.meta["training_args"]["seed"], split_seed_of(info.meta["training_args"])) == (5, 0)
    assert validation_entry(info)["split"]["seed"] == 0
    evaluated = run("-m", "training.commands.evaluate", "--branch", str(student))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(
        info.meta["validation"]["value"]
    )

    assert_one_line_error(
        run(*common, "--layers", "1", "--task", "similarity", "--teacher", str(teacher)),
        "task definition",
    )
    assert_one_line_error(run(*common, "--layers", "1", "--distill-alpha", "0.5"), "--teacher")
    assert_one_line_error(
        run(*common, "--layers", "1", "--teacher", str(teacher), "--distill-alpha", "2"),
        "alpha",
    )
    assert_one_line_error(
        run(*common, "--layers", "1", "--teacher", str(tmp_path / "nowhere")), "nowhere"
    )
