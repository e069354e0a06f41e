"""Two models on the same validation rows: is one better, by a paired test per task?

    python -m benchmarks.compare_models --reference models/small --model models/default

Both stores' fp32 graphs answer each shared task's validation split (the file, columns,
fraction and seed their branches recorded; refused unless both splits hold the same
rows). The figures are the paired tests the graph choice uses
(`training.evaluate.paired_test`), with the reference in fp32's place: the exact
McNemar test on the rows only one model gets right (classification, binary), a paired
bootstrap interval of the Pearson difference (regression). A negative loss is a gain
of `--model` over `--reference`. Comparing the two models' accuracies as independent
samples would waste the pairing: most rows both get right or both get wrong.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common.report import markdown_table, provenance
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from training.evaluate.paired_test import REFERENCE, compare_with_reference
from training.evaluate.store import TaskResult, store_outputs, validation_examples


def _split_texts(manifest, name: str, data_dir: Path) -> list[tuple[str, str | None]]:
    task = manifest.task(name)
    examples = validation_examples(task, task.validation.get("split") or {}, data_dir)
    return [(e.text_a, e.text_b) for e in examples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="store or repository")
    parser.add_argument("--model", type=Path, required=True, help="store or repository")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    reference = load_manifest(resolve_store(args.reference))
    model = load_manifest(resolve_store(args.model))
    shared = [t.name for t in reference.tasks if t.kind != "embedding"]
    shared = [name for name in shared if name in {t.name for t in model.tasks}]
    for name in shared:
        if _split_texts(reference, name, args.data_dir) != _split_texts(model, name, args.data_dir):
            raise SystemExit(f"compare_models: task {name}'s validation rows differ")
    ours = {r.name: r for r in store_outputs(model, args.data_dir, [REFERENCE])}
    rows = []
    for theirs in store_outputs(reference, args.data_dir, [REFERENCE]):
        if theirs.name not in shared:
            continue
        pair = TaskResult(
            theirs.task,
            theirs.labels,
            {REFERENCE: theirs.outputs[REFERENCE], "model": ours[theirs.name].outputs[REFERENCE]},
        )
        test = compare_with_reference(pair, "model")
        if test["test"] == "mcnemar_exact":
            detail = (
                f"{test['right_in_fp32_only']} / {test['right_in_variant_only']}, "
                f"p = {test['p_value']:.4f}"
            )
        else:
            low, high = test["loss_interval_points"]
            detail = f"95% interval [{-high:.2f}, {-low:.2f}]"
        rows.append(
            [
                name_metric(pair),
                len(pair.labels),
                f"{pair.metric(REFERENCE):.4f}",
                f"{pair.metric('model'):.4f}",
                f"{-test['loss_points']:+.2f}",
                detail,
            ]
        )
    print(f"## {args.model} against {args.reference}, paired per task\n\n{provenance()}\n")
    headers = [
        "task (metric)",
        "rows",
        "reference",
        "model",
        "gain (points)",
        "right in reference only / model only, or the gain's interval",
    ]
    print(markdown_table(headers, rows))


def name_metric(result: TaskResult) -> str:
    return f"{result.name} ({result.task.definition.metric_name})"


if __name__ == "__main__":
    main()
