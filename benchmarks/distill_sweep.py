"""Shallow students with and without distillation, as a share of full fine-tuning.

    python -m benchmarks.distill_sweep --data-dir ../shared/data --json docs/report/k_sweep.json
    python -m benchmarks.distill_sweep --task sentiment --layers 4 --seeds 0   # one more run

For each preset task: branches at K = 1, 2, 3 (`--layers`) trained with the labels
alone and distilled from the task's teacher (default: its shipped branch in
models/shipped/small/, the best branch this project has of it), at seed 0, and at every
`--seeds` for K = 2 (`--seeded-layers`). Every run is the real training command,
`training/finetune_top_layers.py`, on one validation split (`--split-seed 0`, the split
every teacher was selected on, so no teacher has seen a validation example), so each
branch is kept under `--out` with its branch.json, ready to ship. The table gives each
(task, K, teacher) the mean and spread over seeds, as a percentage of the task's full
fine-tuning reference (the `full` records of the sweep file). With `--json`, each run is
recorded in the sweep file the report draws its K chart from; `--reuse` takes a run
already recorded there (same task, K and recipe) instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common.report import print_report
from training.data.presets import PRESETS
from training.fit.branch import BRANCH_META, read_branch_info, resolve_branch_dir
from training.report.sweep_log import FULL, SweepRecord, load_sweep, record_sweep

ROOT = Path(__file__).resolve().parents[1]
FINETUNE = ROOT / "training" / "finetune_top_layers.py"
# The sweep recipe (training defaults); a run's record adds its seed and teacher to it.
RECIPE = {
    "epochs": 3,
    "lr": 1e-4,
    "head_lr": 1e-3,
    "warmup": 0.1,
    "pooling": "cls",
    "pair_order": "ab",
}


def recipe_of(seed: int, teacher: dict | None) -> dict:
    """The record's recipe: seed 0 without a teacher is the plain K sweep's recipe, so
    those records are shared with benchmarks/k_sweep.py."""
    recipe = dict(RECIPE)
    if seed:
        recipe["seed"] = seed
    if teacher:
        recipe["teacher"] = teacher
    return recipe


def train(args: argparse.Namespace, task: str, layers: int, seed: int, teacher: Path | None):
    """One run of the training command; the branch.json of what it saved."""
    mode = "distilled" if teacher else "plain"
    command = [
        sys.executable,
        str(FINETUNE),
        "--data-dir",
        str(args.data_dir),
        "--skip-bad-rows",
        "--quiet",
        "--task",
        task,
        "--layers",
        str(layers),
        "--seed",
        str(seed),
        "--split-seed",
        "0",
        "--out",
        str(args.out / f"{mode}-k{layers}-s{seed}"),
    ]
    for option, value in (
        ("--epochs", RECIPE["epochs"]),
        ("--lr", RECIPE["lr"]),
        ("--head-lr", RECIPE["head_lr"]),
        ("--warmup", RECIPE["warmup"]),
        ("--pooling", RECIPE["pooling"]),
        ("--pair-order", RECIPE["pair_order"]),
    ):
        command += [option, str(value)]
    if teacher:
        command += ["--teacher", str(teacher)]
        command += ["--distill-temperature", str(args.temperature)]
        command += ["--distill-alpha", str(args.alpha)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    saved = Path(done.stdout.strip().splitlines()[-1].rsplit(" -> ", 1)[1])
    return json.loads((saved / BRANCH_META).read_text(encoding="utf-8"))


def record_of(meta: dict) -> SweepRecord:
    """A saved branch as a sweep record: its recipe (the sweep recipe's keys, its seed
    if not 0, its teacher if distilled) and its best-epoch validation result."""
    args, validation = meta["training_args"], meta["validation"]
    recipe = {key: args[key] for key in RECIPE}
    if args.get("seed"):
        recipe["seed"] = args["seed"]
    distillation = args.get("distillation")
    if distillation:
        teacher = distillation["teacher"]
        recipe["teacher"] = {
            "version": teacher["version"],
            "layers": teacher["layers"],
            "value": teacher["validation"]["value"],
            "temperature": distillation["temperature"],
            "alpha": distillation["alpha"],
        }
    return SweepRecord(
        task=meta["task"],
        layers=meta["layers"],
        metric=validation["metric"],
        value=round(validation["value"], 4),
        best_epoch=validation["best_epoch"],
        minutes=round(validation["train_seconds"] / 60, 2),
        recipe=recipe,
    )


def teacher_of(args: argparse.Namespace, task: str) -> tuple[Path, dict]:
    info = read_branch_info(resolve_branch_dir(args.teachers / task))
    validation = info.meta.get("validation", {})
    summary = {
        "version": info.version,
        "layers": info.layers,
        "value": validation.get("value"),
        "temperature": args.temperature,
        "alpha": args.alpha,
    }
    return info.path, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--task", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeded-layers", type=int, nargs="*", default=[2])
    parser.add_argument(
        "--modes", nargs="+", choices=("plain", "distilled"), default=["plain", "distilled"]
    )
    parser.add_argument("--teachers", type=Path, default=ROOT / "models" / "shipped" / "small")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "distill")
    parser.add_argument("--json", type=Path, help="record every run in this sweep file")
    parser.add_argument("--reuse", action="store_true", help="skip runs the file records")
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="train nothing: tabulate the runs the --json file records",
    )
    parser.add_argument(
        "--record",
        type=Path,
        nargs="+",
        metavar="BRANCH",
        help="only add these trained branches (any recipe) to the --json file",
    )
    args = parser.parse_args()
    if args.record:
        records = [record_of(read_branch_info(resolve_branch_dir(b)).meta) for b in args.record]
        record_sweep(args.json, records)
        for record in records:
            print(record)
        return
    recorded = {record.key: record for record in load_sweep(args.json)} if args.json else {}
    full = {r.task: r.value for r in recorded.values() if r.layers == FULL}

    results: dict[tuple[str, int, str], list[SweepRecord]] = {}
    for task in args.task:
        teacher_path, teacher = teacher_of(args, task)
        for layers in args.layers:
            seeds = args.seeds if layers in args.seeded_layers else [0]
            for mode in args.modes:
                for seed in seeds:
                    distil = mode == "distilled"
                    recipe = recipe_of(seed, teacher if distil else None)
                    key = SweepRecord(task, layers, "", 0.0, 0, 0.0, recipe).key
                    if (args.reuse or args.table_only) and key in recorded:
                        record = recorded[key]
                    elif args.table_only:
                        continue
                    else:
                        meta = train(args, task, layers, seed, teacher_path if distil else None)
                        record = record_of(meta)
                        assert record.key == key, (record.key, key)
                        if args.json:
                            record_sweep(args.json, [record])
                    results.setdefault((task, layers, mode), []).append(record)
                    print(
                        task,
                        layers,
                        mode,
                        seed,
                        record.value,
                        record.minutes,
                        file=sys.stderr,
                        flush=True,
                    )

    rows = []
    for (task, layers, mode), records in results.items():
        values = [r.value for r in records]
        mean = statistics.fmean(values)
        reference = full.get(task)
        rows.append(
            (
                task,
                layers,
                mode,
                len(values),
                f"{mean:.4f}",
                f"{min(values):.4f}-{max(values):.4f}" if len(values) > 1 else "",
                f"{100 * mean / reference:.1f}%" if reference else "?",
                f"{statistics.fmean(r.minutes for r in records):.1f}",
            )
        )
    print_report(
        f"Distillation sweep (teacher: the shipped branch; T {args.temperature:g}, "
        f"alpha {args.alpha:g}; recipe {RECIPE}; seeded 10% validation split, split seed 0)",
        ["task", "K", "training", "seeds", "mean", "range", "of full FT", "minutes"],
        rows,
    )


if __name__ == "__main__":
    main()
