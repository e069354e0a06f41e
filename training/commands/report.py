"""Write the HTML accuracy report (docs/report/) of a store.

    bert-mts-report --store models/default --data-dir ../shared/data

What it shows, and how: `training.report.page`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.locations import default_store
from training.commands.cli import OneLineArgumentParser, UsageError, run_cli
from training.report.page import write_report

PROG = "report"


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description="Write the HTML accuracy report.")
    parser.add_argument("--store", type=Path, default=default_store())
    parser.add_argument(
        "--data-dir", type=Path, help="look the recorded data files up here, by file name"
    )
    parser.add_argument("--sweep", type=Path, default=Path("docs/report/k_sweep.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/report"))
    parser.add_argument("--variants", nargs="+", help="graphs to score (default: fp32, int8)")
    args = parser.parse_args(argv)
    for path, what in ((args.store, "store"), (args.data_dir, "data directory")):
        if path is not None and not path.exists():
            raise UsageError(f"{what} {path} does not exist")
    index = write_report(args.store, args.data_dir, args.sweep, args.out, args.variants)
    print(f"wrote {index}")
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-report`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
