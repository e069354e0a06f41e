"""Write the accuracy report of a published model: one HTML page and its PNG plots.

    bert-mts-report --store models/default --data-dir ../shared/data \\
        --sweep docs/report/k_sweep.json --out docs/report [--compare-model small]

Every figure of the shipped model is computed here, from the store's ONNX graphs run
by ONNX Runtime on each task's own validation split (drawn exactly as in training),
not copied from training logs. The K chart and the full fine-tuning reference come
from the sweep file that `python -m benchmarks.k_sweep --json` writes. Other shipped
models (`--compare-model NAME`: their built repository and sweep file, as the catalogue
names them) are measured the same way and shown beside it per task, with the literature,
and each one's own K sweep as a chart (every recorded recipe: a deeper base's sweep is
a handful of runs of several recipes). The output directory is replaced as a whole, or
left as it was if anything fails.
"""

from __future__ import annotations

import html
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.atomic import atomic_directory
from model_store.graph_choice import choose_graph
from model_store.manifest import Manifest, load_manifest
from model_store.repository import resolve_store
from model_store.tasks import TaskDefinition
from training.errors import UsageError
from training.evaluate import multilabel
from training.evaluate.store import TaskResult, store_outputs
from training.fit.objectives import PRESET_SCORE_TASKS, overall_score
from training.report import plots as report_plots
from training.report.depth_rule import KEEP, base_recipe, choose_depths, sweep_points
from training.report.sweep_log import FULL, SweepRecord, load_sweep

INDEX = "index.html"
SWEEP_COPY = "k_sweep.json"

# Published dev-set figures this method comes from (bert-base, full Quora), and the
# BERT-MTS report's merged partial model: for reference beside ours.
LITERATURE_BERT_BASE = {
    "sentiment": "0.52-0.53",
    "paraphrase": "0.874-0.888",
    "similarity": "0.85-0.877",
}
LITERATURE_BERT_MTS = {"sentiment": 0.525, "paraphrase": 0.885, "similarity": 0.862}
VARIANT_ORDER = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class ModelSource:
    """A model to show beside the report's store: its name, repository and sweep file."""

    name: str
    store: Path
    sweep: Path | None


@dataclass(frozen=True)
class MeasuredModel:
    """A model as the report shows it: its fp32 graph's validation results."""

    name: str
    manifest: Manifest
    results: list[TaskResult]
    sweep: list[SweepRecord]

    @property
    def label(self) -> str:
        base = Path(str(self.manifest.base_model.get("name", "?"))).name
        return f"{self.name}: {base}, {self.manifest.num_layers} layers"


def measure_model(source: ModelSource, data_dir: Path | None) -> MeasuredModel:
    manifest = load_manifest(resolve_store(source.store))
    sweep = load_sweep(source.sweep) if source.sweep is not None else []
    return MeasuredModel(source.name, manifest, store_outputs(manifest, data_dir, ["fp32"]), sweep)


def comparison_rows(models: Sequence[MeasuredModel]) -> list[list[str]]:
    """Per task, each model's K and fp32 validation metric, then the literature; last,
    each model's overall score where it has every preset task."""
    tasks: list[str] = []
    for model in models:
        tasks += [r.name for r in model.results if r.name not in tasks]
    rows = []
    for task in tasks:
        cells = [html.escape(task)]
        metric = "-"
        for model in models:
            result = next((r for r in model.results if r.name == task), None)
            entry = next((t for t in model.manifest.tasks if t.name == task), None)
            if result is not None:
                metric = result.task.definition.metric_name
            cells += [str(entry.layers) if entry else "-", _cell(result and result.metric("fp32"))]
        cells.insert(1, html.escape(metric))
        cells += [
            _cell(LITERATURE_BERT_BASE.get(task)),
            _cell(LITERATURE_BERT_MTS.get(task), 3),
        ]
        rows.append(cells)
    overall = ["overall", "score"]
    for model in models:
        metrics = {r.name: r.metric("fp32") for r in model.results}
        complete = set(metrics) >= set(PRESET_SCORE_TASKS)
        overall += ["", _cell(overall_score(metrics) if complete else None)]
    overall += ["-", _cell(overall_score(LITERATURE_BERT_MTS), 3)]
    return [*rows, overall]


def comparison_section(models: Sequence[MeasuredModel], figures: dict[str, str]) -> str:
    """The models side by side (empty with one model)."""
    if len(models) < 2:
        return ""
    header = ["task", "metric"]
    for model in models:
        header += [f"{model.label}: K", f"{model.name} fp32"]
    header += ["bert-base (literature)", "BERT-MTS merged (literature)"]
    charts = "".join(
        f'<figure><img src="{html.escape(figures[name])}" alt="{html.escape(name)}">'
        f"<figcaption>K sweep of {html.escape(model.label)}: validation metric against K "
        "for every recorded run (all recipes), distilled runs marked, full fine-tuning "
        "dotted where recorded, the shipped branch starred.</figcaption></figure>"
        for model in models
        if (name := f"k_sweep_{model.name}") in figures
    )
    return f"""<h2>The shipped models side by side</h2>
<p>Each model's fp32 graph on the same seeded validation splits (ONNX Runtime, CPU).</p>
{_table(header, comparison_rows(models))}
{charts}
"""


def draw_model_sweeps(models: Sequence[MeasuredModel], out: Path) -> dict[str, str]:
    """Each compared model's own K chart, from its sweep file (all recipes)."""
    files: dict[str, str] = {}
    for model in models:
        if not model.sweep:
            continue
        by_task = {result.name: result for result in model.results}
        shipped = {
            task.name: (task.layers, by_task[task.name].metric("fp32"))
            for task in model.manifest.tasks
            if task.name in by_task
        }
        full = {task: record.value for task, record in full_references(model.sweep).items()}
        files[f"k_sweep_{model.name}"] = f"k_sweep_{model.name}.png"
        report_plots.plot_k_sweep(
            sweep_points(model.sweep), full, shipped, out / f"k_sweep_{model.name}.png"
        )
    return files


def draw_plots(
    results: list[TaskResult],
    manifest: Manifest,
    sweep: list[SweepRecord],
    out: Path,
) -> dict[str, str]:
    """The four figures, from the fp32 graph's outputs; returns {figure: file name}."""
    by_task = {result.name: result for result in results}
    files: dict[str, str] = {}
    for result in results:
        task, outputs = result.task.definition, result.outputs["fp32"]
        if task.kind == "classification":
            matrix = report_plots.confusion_matrix(
                result.labels, outputs.argmax(axis=1), task.num_outputs
            )
            files[task.name] = f"{task.name}_confusion.png"
            report_plots.plot_confusion(matrix, task.label_names, out / files[task.name])
        elif task.kind == "multilabel":  # every label's probability against its truth
            truth = multilabel.multi_hot(result.labels, task.num_outputs).ravel().astype(np.float64)
            files[task.name] = f"{task.name}_calibration.png"
            report_plots.plot_calibration(
                multilabel.probabilities(outputs).ravel(), truth, out / files[task.name]
            )
        elif task.kind == "regression":
            files[task.name] = f"{task.name}_residuals.png"
            report_plots.plot_residuals(result.labels, outputs[:, 0], out / files[task.name])
        else:
            probabilities = 1 / (1 + np.exp(-outputs[:, 0].astype(np.float64)))
            files[task.name] = f"{task.name}_calibration.png"
            report_plots.plot_calibration(probabilities, result.labels, out / files[task.name])
    # An embedding task has no labels, so no metric to star on the chart.
    shipped = {
        task.name: (task.layers, by_task[task.name].metric("fp32"))
        for task in manifest.tasks
        if task.name in by_task
    }
    full = {task: record.value for task, record in full_references(sweep).items()}
    points = sweep_points(sweep, sweep_recipe(sweep))
    files["k_sweep"] = "k_sweep.png"
    report_plots.plot_k_sweep(points, full, shipped, out / files["k_sweep"])
    files["trade_off"] = "trade_off.png"
    depths = {task.name: task.layers for task in manifest.tasks}
    report_plots.plot_trade_off(
        points, full, manifest.num_layers, depths, KEEP, out / files["trade_off"]
    )
    return files


def sweep_recipe(sweep: list[SweepRecord]) -> dict:
    """The recipe most K values were swept with (seeds and teachers aside): the charts'
    lines and the depth rule use its runs; other recipes (tuning) are in the table only."""
    partial = [record for record in sweep if record.layers != FULL]
    if not partial:
        return {}
    keys = Counter(json.dumps(base_recipe(record), sort_keys=True) for record in partial)
    return json.loads(keys.most_common(1)[0][0])


def depth_rows(sweep: list[SweepRecord], manifest: Manifest) -> list[list[str]]:
    """The depth rule applied to the sweep, next to what the store ships."""
    full = {task: record.value for task, record in full_references(sweep).items()}
    recipe = sweep_recipe(sweep)
    choices = choose_depths(sweep_points(sweep), full)
    shipped = {task.name: task for task in manifest.tasks}
    rows = []
    for task, choice in choices.items():
        point = choice.point
        entry = shipped.get(task)
        rows.append(
            [
                html.escape(task),
                _cell(choice.reference),
                str(point.layers) if point else "none of the swept K",
                html.escape(
                    ("distilled" if point.distilled else "labels only")
                    + ("" if json.loads(point.recipe) == recipe else f"; {point.recipe_text}")
                )
                if point
                else "-",
                _cell(point.mean if point else None),
                f"{choice.share:.1%}" if choice.share else "-",
                str(entry.layers) if entry else "-",
                str(manifest.num_layers - entry.layers) if entry else "-",
            ]
        )
    return rows


def _cell(value: float | str | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return html.escape(value)
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def full_references(sweep: list[SweepRecord]) -> dict[str, SweepRecord]:
    """The best full fine-tuning run per task (over the recipes tried)."""
    best: dict[str, SweepRecord] = {}
    for record in sweep:
        if record.layers == FULL and (
            record.task not in best or record.value > best[record.task].value
        ):
            best[record.task] = record
    return best


def summary_rows(
    results: list[TaskResult], manifest: Manifest, sweep: list[SweepRecord], variants: list[str]
) -> tuple[list[list[str]], dict[str, float]]:
    """Per-task rows and the overall scores (per variant, and of full fine-tuning)."""
    full = full_references(sweep)
    entries = {task.name: task for task in manifest.tasks}
    rows: list[list[str]] = []
    for result in results:
        entry = entries[result.name]
        reference = full.get(result.name)
        minutes = entry.validation.get("train_seconds")
        rows.append(
            [
                html.escape(result.name),
                html.escape(result.task.definition.metric_name),
                str(entry.layers),
                *(_cell(result.metric(v)) for v in variants),
                *(
                    _points(result.metric(v) - result.metric("fp32"))
                    for v in variants
                    if v != "fp32"
                ),
                _cell(reference.value if reference else None),
                _cell(LITERATURE_BERT_BASE.get(result.name)),
                _cell(LITERATURE_BERT_MTS.get(result.name), 3),
                _cell(minutes / 60 if minutes else None, 1),
            ]
        )
    overall: dict[str, float] = {}
    if {result.name for result in results} >= set(PRESET_SCORE_TASKS):
        for variant in variants:
            overall[variant] = overall_score({r.name: r.metric(variant) for r in results})
        if set(full) >= set(PRESET_SCORE_TASKS):
            overall["full fine-tuning"] = overall_score({t: r.value for t, r in full.items()})
        overall["BERT-MTS report (bert-base)"] = overall_score(LITERATURE_BERT_MTS)
    return rows, overall


def _points(difference: float) -> str:
    """A metric difference in points (hundredths), signed."""
    return f"{100 * difference:+.2f}"


def served_default(manifest: Manifest) -> str:
    """Which graph `--graph auto` serves on a CPU and on CUDA, and why (from the metrics
    the store recorded at publish)."""
    return "; ".join(
        f"on {where}: <b>{html.escape(c.variant)}</b> ({html.escape(c.reason)})"
        for where, c in (
            ("a CPU", choose_graph(manifest, cuda=False)),
            ("CUDA", choose_graph(manifest, cuda=True)),
        )
    )


def caption(task: TaskDefinition) -> str:
    """What a task's figure shows, from its kind."""
    if task.kind == "classification":
        return f"{task.name} ({task.num_outputs} classes): confusion matrix of the fp32 graph."
    if task.kind == "multilabel":
        return (
            f"{task.name} ({task.num_outputs} labels): reliability diagram of every label's "
            "probability in the fp32 graph."
        )
    if task.kind == "regression":
        low, high = task.value_range or (0, 0)
        return f"{task.name} ({low:g}-{high:g}): predictions and residuals of the fp32 graph."
    return f"{task.name} (binary): reliability diagram of the fp32 graph's probabilities."


def _forks(manifest: Manifest) -> str:
    """The graph's shape in words: where each task forks and what all tasks share."""
    forks = ", ".join(
        f"{html.escape(t.name)} at layer {t.fork_depth} (K = {t.layers})" for t in manifest.tasks
    )
    return (
        f"tasks fork from the frozen layers {forks}; frozen layers held once in the graph: "
        f"{manifest.frozen_layers}; shared by every task: {manifest.trunk_layers}"
    )


def render_html(
    manifest: Manifest,
    rows: list[list[str]],
    overall: dict[str, float],
    variants: list[str],
    sweep: list[SweepRecord],
    figures: dict[str, str],
    depths: list[list[str]],
    comparison: str = "",
) -> str:
    header = [
        "task",
        "metric",
        "K",
        *(f"shipped {v}" for v in variants),
        *(f"{v} - fp32 (points)" for v in variants if v != "fp32"),
        "full fine-tuning",
        "bert-base (literature)",
        "BERT-MTS merged (literature)",
        "training minutes",
    ]
    overall_rows = [[html.escape(name), _cell(value)] for name, value in overall.items()]
    if "full fine-tuning" in overall:
        for variant in variants:
            share = overall[variant] / overall["full fine-tuning"]
            overall_rows.append([f"shipped {variant} / full fine-tuning", f"{share:.1%}"])
    sweep_rows = [
        [
            html.escape(r.task),
            html.escape(str(r.layers)),
            html.escape(r.metric),
            _cell(r.value),
            str(r.best_epoch),
            _cell(r.minutes, 1),
            html.escape(", ".join(f"{k} {v}" for k, v in sorted(r.recipe.items()))),
        ]
        for r in sweep
    ]
    recipes = [
        [
            html.escape(task.name),
            str(task.layers),
            html.escape(task.pooling),
            html.escape(
                ", ".join(f"{k} {v}" for k, v in sorted(task.validation.get("recipe", {}).items()))
            ),
        ]
        for task in manifest.tasks
    ]
    captions = {
        "k_sweep": "Validation metric against K, the number of tuned top layers (sweep "
        "recipe), with and without distillation (bars span the seeds), full fine-tuning "
        "dotted and the shipped branch starred.",
        "trade_off": "Each task's validation metric as a share of its full fine-tuning, "
        "against the frozen layers it shares with the others (L - K).",
        **{task.name: caption(task.definition) for task in manifest.tasks},
    }
    images = "".join(
        f'<figure><img src="{html.escape(file)}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(captions[name])}</figcaption></figure>"
        for name, file in figures.items()
        if name in captions
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>BERT-MTS accuracy report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>BERT-MTS accuracy report</h1>
<p>Model: base <code>{html.escape(manifest.base_model.get("name", ""))}</code>,
{manifest.num_layers} layers; {_forks(manifest)}; store created {html.escape(manifest.created)}.
Every shipped figure is measured on the ONNX graphs with ONNX Runtime (CPU), on each
task's seeded validation split carved from its train file.</p>
<h2>Per task</h2>
{_table(header, rows)}
<p>Served by default (<code>--graph auto</code>, tolerance 1 point per task):
{served_default(manifest)}.</p>
<h2>Overall score</h2>
<p><code>(sentiment accuracy + paraphrase accuracy + (similarity pearson + 1) / 2) / 3</code></p>
{_table(["model", "overall"], overall_rows)}
<p>Literature figures are dev-set results of bert-base (12 layers) with the full Quora
set; ours is a 6-layer, 384-wide sentence encoder trained on CPU with the task files in
<code>../shared/data</code> (16k Quora pairs), so they are context, not a like-for-like
comparison. docs/results.md discusses the differences.</p>
{comparison}<h2>Branch depths</h2>
<p>The method's rule: each task's K is the smallest number of tuned top layers whose
validation metric keeps at least {KEEP:.0%} of full fine-tuning, with distillation from
a deeper branch of the task where it scores higher, and the task's own recipe where it
differs from the sweep's and scores higher (mean over seeds where several ran).
Every task of this store shares the bottom {manifest.trunk_layers} of its
{manifest.num_layers} layers.</p>
{
        _table(
            [
                "task",
                "full fine-tuning",
                "rule's K",
                "trained with",
                "validation",
                "of full FT",
                "shipped K",
                "shipped shares (L - K)",
            ],
            depths,
        )
    }
<h2>Recipes of the shipped branches</h2>
{_table(["task", "K", "pooling", "recipe"], recipes)}
<h2>Plots</h2>
{images}
<h2>K sweep and full fine-tuning runs</h2>
{_table(["task", "K", "metric", "validation", "best epoch", "minutes", "recipe"], sweep_rows)}
</body></html>
"""


def write_report(
    store: Path,
    data_dir: Path | None,
    sweep_file: Path,
    out: Path,
    variants: Sequence[str] | None,
    compare: Sequence[ModelSource] = (),
    name: str = "shipped",
) -> Path:
    """The report of `store` (called `name` beside the `compare` models)."""
    manifest = load_manifest(resolve_store(store))
    chosen = list(variants or [v for v in VARIANT_ORDER if v in manifest.graphs and v != "fp16"])
    missing = [v for v in chosen if v not in manifest.graphs]
    if missing or "fp32" not in chosen:
        raise UsageError(f"{store}: the report needs the fp32 graph and {', '.join(chosen)}")
    sweep = load_sweep(sweep_file)
    if not sweep:
        raise UsageError(
            f"{sweep_file} holds no sweep runs: run python -m benchmarks.k_sweep --json"
        )
    results = store_outputs(manifest, data_dir, chosen)
    models = [MeasuredModel(name, manifest, results, sweep)]
    models += [measure_model(source, data_dir) for source in compare]
    with atomic_directory(out, replace=True) as staging:
        figures = draw_plots(results, manifest, sweep, staging)
        figures.update(draw_model_sweeps(models[1:], staging))
        rows, overall = summary_rows(results, manifest, sweep, chosen)
        depths = depth_rows(sweep, manifest)
        section = comparison_section(models, figures)
        page = render_html(manifest, rows, overall, chosen, sweep, figures, depths, section)
        (staging / INDEX).write_text(page, encoding="utf-8")
        # The sweep data travels with the report (and may live inside `out` itself:
        # the compared models' sweep files too, or replacing `out` would delete them).
        shutil.copyfile(sweep_file, staging / SWEEP_COPY)
        for source in compare:
            if source.sweep is not None and source.sweep.is_file():
                shutil.copyfile(source.sweep, staging / source.sweep.name)
    for name, value in overall.items():
        print(f"overall {name}: {value:.4f}")
    return out / INDEX
