"""Time `bert-mts-store publish` of one task into a repository, and its disk use.

    python -m benchmarks.publish_bench --store models/default --task similarity \
        --branch models/shipped/similarity [--compare-root /path/to/old/checkout] \
        [--runs 3] [--disk 5]

Prepares a copy of the repository without `--task` (one untimed `publish --remove`),
then, per run, publishes `--branch` into a fresh copy of it: one task added, the others
unchanged, as a user adding or retraining a task does. Each run is a separate process
(imports included), timed wall-clock; the `graphs` column says how the runs made their
graphs (spliced into the prepared version's, or built in full). `--compare-root` times
another checkout's code on the same copies in the same run (a before/after). `--disk N`
then publishes N versions in a row (alternately removing and adding the task) and
prints the repository's size after each, counting hard-linked files once, and after
`prune --keep 2`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common.report import markdown_table, provenance
from model_store.locations import default_store, shipped_dir

ROOT = Path(__file__).resolve().parents[1]


def store_module(root: Path) -> str:
    """The store command's module in `root`'s checkout (older ones: training.store)."""
    return (
        "training.commands.store"
        if (root / "training" / "commands" / "store.py").is_file()
        else "training.store"
    )


def store_cli(root: Path, *args: str) -> tuple[float, str]:
    """Run `root`'s store command (`python -m MODULE ARGS`, with `root`'s code); its wall
    time in seconds and how it made its graphs (the `graphs ...` line a publish prints:
    spliced into the previous version's, or built in full and why; "" from older code)."""
    module = store_module(root)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{root}: {module} {' '.join(args)} failed: {result.stderr}")
    how = [line.strip() for line in result.stdout.splitlines() if line.startswith("  graphs ")]
    return elapsed, (how[0] if how else "")


def disk_bytes(directory: Path) -> int:
    """Bytes on disk under `directory`, each hard-linked file counted once."""
    seen, total = set(), 0
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def tail(times: list[float]) -> list[str]:
    return [f"{np.percentile(times, q):.1f} s" for q in (50, 99)] + [f"{max(times):.1f} s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=default_store())
    parser.add_argument("--task", default="similarity")
    parser.add_argument("--branch", type=Path, default=shipped_dir() / "similarity")
    parser.add_argument("--compare-root", type=Path, help="another checkout, timed too")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--disk", type=int, default=0, metavar="N")
    args = parser.parse_args()
    branch = args.branch.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        shutil.copytree(args.store, prepared, symlinks=True)
        store_cli(ROOT, "publish", "--store", str(prepared), "--remove", args.task)
        roots = [("this checkout", ROOT)]
        if args.compare_root:
            roots.insert(0, (f"{args.compare_root}", args.compare_root.resolve()))
        times: dict[str, list[float]] = {label: [] for label, _ in roots}
        builds: dict[str, set[str]] = {label: set() for label, _ in roots}
        for run in range(args.runs):
            for label, root in roots:
                copy = Path(tmp) / f"run-{run}-{len(times[label])}-{root.name}"
                shutil.copytree(prepared, copy, symlinks=True)
                elapsed, how = store_cli(
                    root, "publish", "--store", str(copy), "--branch", str(branch)
                )
                times[label].append(elapsed)
                builds[label].add(how.split(" (")[0] or "not said")
                shutil.rmtree(copy)
        print(provenance())
        rows = [
            [label, len(t), *tail(t), "; ".join(sorted(builds[label]))]
            for label, t in times.items()
        ]
        print(markdown_table(["code", "runs", "p50", "p99", "max", "graphs"], rows))
        if args.disk:
            repo = Path(tmp) / "disk"
            shutil.copytree(args.store, repo, symlinks=True)
            sizes = [["as built", 1, f"{disk_bytes(repo) / 1e6:.0f} MB"]]
            for step in range(args.disk):
                change = ["--remove", args.task] if step % 2 == 0 else ["--branch", str(branch)]
                store_cli(ROOT, "publish", "--store", str(repo), *change)  # its time unused
                versions = len(list((repo / "versions").iterdir()))
                sizes.append(
                    [
                        f"publish {' '.join(change[:1])}",
                        versions,
                        f"{disk_bytes(repo) / 1e6:.0f} MB",
                    ]
                )
            store_cli(ROOT, "prune", "--store", str(repo), "--keep", "2")
            versions = len(list((repo / "versions").iterdir()))
            sizes.append(["prune --keep 2", versions, f"{disk_bytes(repo) / 1e6:.0f} MB"])
            print(markdown_table(["step", "versions", "repository on disk"], sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
