"""The method's depth rule: the smallest K that keeps 99% of full fine-tuning, with
distillation where it scores higher, seeds averaged, other recipes left out."""

from __future__ import annotations

from training.report.depth_rule import choose_depths, sweep_points
from training.report.sweep_log import FULL, SweepRecord

RECIPE = {"epochs": 3, "lr": 1e-4}
TEACHER = {"version": "t", "layers": 6}


def _run(task: str, layers, value: float, seed: int = 0, teacher: bool = False, **recipe):
    extra = {**({"seed": seed} if seed else {}), **({"teacher": TEACHER} if teacher else {})}
    return SweepRecord(task, layers, "accuracy", value, 3, 1.0, {**RECIPE, **recipe, **extra})


def test_smallest_k_keeping_the_share_with_distillation_where_it_helps() -> None:
    sweep = [
        _run("a", 1, 0.80),
        _run("a", 1, 0.97, teacher=True),  # one lucky seed ...
        _run("a", 1, 0.95, seed=1, teacher=True),  # ... but the mean (0.96) falls short
        _run("a", 2, 0.985),
        _run("a", 2, 0.992, teacher=True),
        _run("a", 3, 1.0),
        _run("b", 1, 0.99),  # plain and distilled tie: the simpler one
        _run("b", 1, 0.99, teacher=True),
        _run("c", 1, 0.5),
        _run("c", 1, 1.5, epochs=9),  # another recipe: listed, never chosen
        _run("d", 1, 0.9),  # no full fine-tuning reference: no rule
    ]
    points = sweep_points(sweep, RECIPE)
    choices = choose_depths(points, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert set(choices) == {"a", "b", "c"}
    a, b, c = choices["a"], choices["b"], choices["c"]
    assert (a.point.layers, a.point.distilled, a.point.mean) == (2, True, 0.992)
    assert a.share == 0.992
    assert (b.point.layers, b.point.distilled) == (1, False)
    assert c.point is None and c.share is None
    first = next(p for p in points if p.task == "a" and p.layers == 1 and p.distilled)
    assert (first.values, first.low, first.high) == ((0.97, 0.95), 0.95, 0.97)


def test_full_runs_are_references_not_points() -> None:
    points = sweep_points([_run("a", FULL, 0.9), _run("a", 2, 0.8)], RECIPE)
    assert [(p.task, p.layers) for p in points] == [("a", 2)]


def test_a_task_s_own_recipe_counts_where_it_scores_higher() -> None:
    """Across recipes (the report's view), a K passes if any recipe passes there; the
    recipe is named with the point."""
    sweep = [
        _run("a", 1, 0.90),
        _run("a", 2, 0.95),
        _run("a", 2, 0.995, teacher=True, pooling="mean"),
        _run("a", 3, 0.999),
    ]
    choice = choose_depths(sweep_points(sweep), {"a": 1.0})["a"]
    assert (choice.point.layers, choice.point.distilled) == (2, True)
    assert "pooling mean" in choice.point.recipe_text
    only_sweep = choose_depths(sweep_points(sweep, RECIPE), {"a": 1.0})["a"]
    assert only_sweep.point.layers == 3
