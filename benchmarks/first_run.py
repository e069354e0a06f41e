"""How long a new user's first `make serve` takes, step by step, and the disk it uses.

    python -m benchmarks.first_run [--model default|small] [--keep DIR]

Clones this checkout into a fresh directory (with `../shared` beside it, as the README
asks) and runs there, timed one by one, what `make serve` runs before it serves:
`make install` with pip's cache off (a fresh machine has none), the base's first-use
install into an empty bases directory (the 12-layer base's 400 MB download; the
packaged 6-layer base has none), and `make model`. Prints each step's wall time and
the disk of the environment, the base cache and the built repository. The times
depend on the network to the package registry as much as on the machine: say which
registry with the figures.
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

from benchmarks.common.report import print_report

ROOT = Path(__file__).resolve().parents[1]


def disk(path: Path) -> str:
    result = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=False)
    return result.stdout.split()[0] if result.returncode == 0 else "-"


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    start = time.monotonic()
    with log.open("w") as out:
        subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="make's MODEL (default: default)")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bert-mts-first-run-"))
    work.mkdir(parents=True, exist_ok=True)
    clone, bases = work / "clone", work / "bases"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    shared = ROOT.parent / "shared"
    if shared.exists() and not (work / "shared").exists():
        (work / "shared").symlink_to(shared)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "BERT_MTS_BASES_DIR": str(bases)}
    env.pop("VIRTUAL_ENV", None)
    make = ["make", f"MODEL={args.model}"]
    rows = []
    seconds = timed([*make, "install"], clone, env, work / "install.log")
    rows.append(["install .venv (pip, no cache)", f"{seconds:.0f} s", disk(clone / ".venv")])
    model = subprocess.run(
        [str(clone / ".venv/bin/python"), "-m", "training.commands.default_model", "dir",
         "--model", args.model],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    seconds = timed(
        [str(clone / ".venv/bin/python"), "-m", "training.commands.default_model",
         "install-base", "--model", args.model],
        clone, env, work / "base.log",
    )  # fmt: skip
    rows.append(["the base's first-use install", f"{seconds:.0f} s", disk(bases)])
    seconds = timed([*make, "model"], clone, env, work / "model.log")
    rows.append([f"make model ({model})", f"{seconds:.0f} s", disk(clone / model)])
    print_report(f"First run of `make serve MODEL={args.model}`", ["step", "time", "disk"], rows)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
