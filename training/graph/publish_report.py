"""What `bert-mts-store publish` prints: the version, and for the graphs it built what
their parity figures mean, for the tasks it changed their metrics per graph.

A raw "int8: 0.695" says nothing to a user: it is the largest difference of any output
(a logit) between the int8 graph and PyTorch on a small probe batch, and int8 has no
tolerance on it by design (dynamic quantization moves logits); what decides whether
int8 may be served is the change of each task's validation metric, which
`--graph auto` holds to a tolerance in points. fp32 and fp16 are held to output
tolerances (the publish fails beyond them).
"""

from __future__ import annotations

from collections.abc import Iterable

from model_store.graph_choice import DEFAULT_TOLERANCE_POINTS, choose_graph, recorded_metrics
from model_store.manifest import Manifest
from training.graph.parity_bounds import FP16_TOLERANCE, FP32_TOLERANCE, GRAPH_BUILD_KEY

TOLERANCES = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE}


def parity_lines(manifest: Manifest) -> list[str]:
    lines = []
    for variant, worst in (manifest.extra.get("parity") or {}).items():
        if variant in TOLERANCES:
            lines.append(
                f"  {variant} graph: outputs within {float(worst):.2g} of PyTorch on the probe "
                f"batch (tolerance {TOLERANCES[variant]:g})"
            )
        else:
            lines.append(
                f"  {variant} graph: output drift up to {float(worst):.3g} from PyTorch (largest "
                "logit difference on the probe batch; no tolerance on it, int8 is judged by "
                "the metric change below)"
            )
    return lines


def metric_lines(manifest: Manifest, tasks: Iterable[str]) -> list[str]:
    recorded = recorded_metrics(manifest)
    if recorded.get("unavailable"):
        return [f"  variant metrics: {recorded['unavailable']}"]
    scores = recorded.get("tasks") or {}
    lines = []
    for name in tasks:
        entry = scores.get(name) or {}
        if not isinstance(entry.get("fp32"), int | float):
            continue
        parts = [f"fp32 {entry['fp32']:.4f}"]
        for variant in manifest.graphs:
            if variant != "fp32" and isinstance(entry.get(variant), int | float):
                change = 100.0 * (entry[variant] - entry["fp32"])
                parts.append(f"{variant} {entry[variant]:.4f} ({change:+.2f} points)")
        examples = entry.get("examples", "?")
        lines.append(
            f"  {name} {entry.get('metric', 'metric')} on {examples} validation "
            f"examples: {', '.join(parts)}"
        )
    return lines


def choice_line(manifest: Manifest) -> str:
    cpu = choose_graph(manifest, cuda=False)
    return (
        f"  on a CPU, --graph auto serves {cpu.variant} (tolerance "
        f"{DEFAULT_TOLERANCE_POINTS:g} point of fp32 on every task): {cpu.reason}"
    )


def build_lines(manifest: Manifest) -> list[str]:
    """How the graphs were made: spliced from the previous version's, or in full (why)."""
    build = manifest.extra.get(GRAPH_BUILD_KEY)
    return [f"  {build}"] if build else []


def publish_summary(manifest: Manifest, changed: Iterable[str]) -> list[str]:
    """The lines after "published ...": how the graphs were made, parity, the changed
    tasks' metrics, the choice."""
    return [
        *build_lines(manifest),
        *parity_lines(manifest),
        *metric_lines(manifest, changed),
        choice_line(manifest),
    ]


def check_lines(manifest: Manifest) -> list[str]:
    """What a build logs: how its graphs were made, their parity figures with their
    meaning and tolerance, and every task's metric per graph (`bert-mts-store publish`
    prints `publish_summary` for the changed tasks instead)."""
    tasks = [task.name for task in manifest.tasks]
    return [
        "checked against PyTorch:",
        *build_lines(manifest),
        *parity_lines(manifest),
        *metric_lines(manifest, tasks),
    ]
