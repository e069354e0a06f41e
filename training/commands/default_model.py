"""Build a shipped model into a servable repository, ship a new branch, list the models.

    bert-mts-default-model build                  # the default model into models/default, once
    bert-mts-default-model build --model small    # the 6-layer model into models/small
    bert-mts-default-model list                   # the shipped models, bases, tasks, K, MB
    bert-mts-default-model pack --model small --branch runs/tune/sentiment   # ship a branch
    bert-mts-default-model pack --model small --embedding   # ship the base's embedding task
    bert-mts-default-model build --model small --record --data-dir ../shared/data   # then
    bert-mts-default-model dir --model small      # where that model's repository is
    bert-mts-default-model install-base --model small   # install its base (first use)

Which models ship, their bases and which is the default: `models/shipped/catalogue.json`
(`model_store.catalogue`); `--model` defaults to the catalogue's default, and an unknown
name is one line listing the known ones. The work, and why the build is checked by
hash: `training.graph.default_model`. The folders are `model_store.locations`'. `dir`,
`list` and the argument checks import no torch, so the Makefile can ask them cheaply.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.catalogue import Catalogue, ShippedModel, load_catalogue
from model_store.hints import script_command
from model_store.locations import model_repository, shipped_dir
from model_store.repository import CURRENT_FILE
from training.commands.cli import OneLineArgumentParser, UsageError, run_cli
from training.errors import ChecksumError

PROG = "bert-mts-default-model"
PROG_SCRIPT = "bert-mts-default-model"


def _model_option(parser, what: str) -> None:
    parser.add_argument("--model", help=f"the shipped model to {what} (default: the default)")
    parser.add_argument(
        "--shipped",
        type=Path,
        default=shipped_dir(),
        help="the folder of shipped models and their catalogue.json",
    )


def shipped_tasks(model: ShippedModel) -> list[tuple[str, int]]:
    """(task, K) of each shipped branch of `model`, read from branch.json (no torch)."""
    tasks = []
    folders = sorted(model.branches.iterdir()) if model.branches.is_dir() else []
    for task in (path for path in folders if path.is_dir()):
        for meta in sorted(task.glob("*/branch.json")):
            tasks.append((task.name, int(json.loads(meta.read_text(encoding="utf-8"))["layers"])))
    return tasks


def shipped_megabytes(model: ShippedModel) -> float:
    """The bytes the model takes in git, in MB (10^6)."""
    return megabytes(model.branches) if model.branches.is_dir() else 0.0


def list_models(catalogue: Catalogue, shipped: Path) -> list[str]:
    """One line per shipped model: name, base, tasks with their K, size, repository."""
    lines = []
    for model in catalogue.models.values():
        tasks = ", ".join(f"{task} K={k}" for task, k in shipped_tasks(model)) or "no branches"
        repository = model_repository(model.name, shipped)
        built = "built" if (repository / CURRENT_FILE).is_file() else "not built"
        lines.append(
            f"{model.name}{' (default)' if catalogue.is_default(model) else ''}: "
            f"base {model.base_model}; {tasks}; {shipped_megabytes(model):.1f} MB shipped; "
            f"{repository} ({built}); {model.description}"
        )
    return lines


def _base_sha256(model: ShippedModel) -> str:
    from model_store.manifest import sha256_of
    from training.encoders.base_model import read_base_model_spec

    return sha256_of(read_base_model_spec(model.base_model).weights_file)


def _pack(args, model: ShippedModel) -> int:
    from training.graph.default_model import pack_branch, ship_embedding

    if not args.branch and not args.embedding:
        raise UsageError("pack needs --branch or --embedding")
    if args.branch:
        base_sha256 = _base_sha256(model)
        for branch in args.branch:
            print(f"packed {pack_branch(branch, model.branches, base_sha256)}")
    if args.embedding:
        print(f"packed {ship_embedding(model.branches, model.base_model)}")
    record = ["build", "--model", model.name, "--record", "--data-dir", "../shared/data"]
    print("now record the new checksums and metrics: " + script_command(PROG_SCRIPT, *record))
    return 0


def _build(args, model: ShippedModel) -> int:
    out = args.out or model_repository(model.name, args.shipped)
    if args.data_dir is not None and not args.record:
        raise UsageError("--data-dir is only read with --record")
    if args.if_missing and not args.record and (out / CURRENT_FILE).is_file():
        print(f"{out} is built already (remove it to rebuild)")
        return 0
    from training.encoders import bases
    from training.graph.default_model import build

    tasks = ", ".join(f"{task} K={k}" for task, k in shipped_tasks(model))
    download = (
        " (not installed yet: downloaded first, with a progress bar)"
        if model.base_model in bases.BASES and bases.installed_dir(model.base_model) is None
        else ""
    )
    if args.record or not out.exists():  # (an existing `out` is refused by build)
        print(  # the build is quiet for minutes on a 12-layer base: say first what it does
            f"{'recording' if args.record else 'building'} {model.name} ({tasks}) on base "
            f"{model.base_model}{download}: {', '.join(model.variants)} ONNX graphs, checked "
            "against PyTorch" + ("" if args.record else f", into {out}"),
            flush=True,
        )
    path, _ = build(
        model.branches, out, args.record, args.data_dir, model.base_model, model.variants
    )
    if args.record:
        print(f"recorded {path}")
    else:
        print(f"built and verified {path} ({megabytes(path):.0f} MB)")
    return 0


def megabytes(directory: Path) -> float:
    """What `directory` takes on disk, in MB (10^6)."""
    return sum(file.stat().st_size for file in directory.rglob("*") if file.is_file()) / 1e6


def _install_base(model: ShippedModel) -> int:
    from training.encoders.base_model import read_base_model_spec

    # Naming an installable base installs it on first use (progress bar, sha256 check).
    print(f"base of {model.name}: {read_base_model_spec(model.base_model).path}")
    return 0


def parser() -> OneLineArgumentParser:
    main_parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build a shipped model into its repository")
    _model_option(build_cmd, "build")
    build_cmd.add_argument(
        "--out", type=Path, help="default: models/default for the default model, else models/NAME"
    )
    build_cmd.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing (exit 0) when the repository is built already (`make model`)",
    )
    build_cmd.add_argument(
        "--record",
        action="store_true",
        help="write the model's SHA256SUMS and variant_metrics.json from this build",
    )
    build_cmd.add_argument(
        "--data-dir",
        type=Path,
        help="with --record: where the branches' data files are, by name (e.g. ../shared/data)",
    )
    pack_cmd = commands.add_parser("pack", help="ship trained branches (int8 weights)")
    _model_option(pack_cmd, "ship the branches in")
    pack_cmd.add_argument("--branch", action="append", type=Path, default=[])
    pack_cmd.add_argument(
        "--embedding",
        action="store_true",
        help="ship the base's sentence embedding task (no tuned layers, no weights)",
    )
    list_cmd = commands.add_parser("list", help="the shipped models: base, tasks, K, size")
    list_cmd.add_argument("--shipped", type=Path, default=shipped_dir())
    dir_cmd = commands.add_parser("dir", help="print the model's repository directory")
    _model_option(dir_cmd, "locate")
    dir_cmd.add_argument("--out", type=Path, help="an explicit repository (printed as given)")
    base_cmd = commands.add_parser("install-base", help="install the model's base if missing")
    _model_option(base_cmd, "install the base of")
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    catalogue = load_catalogue(args.shipped)
    if args.command == "list":
        print("\n".join(list_models(catalogue, args.shipped)))
        return 0
    model = catalogue.resolve(args.model)
    if args.command == "dir":
        print(args.out or model_repository(model.name, args.shipped))
        return 0
    if args.command == "install-base":
        return _install_base(model)
    if args.command == "pack":
        return _pack(args, model)
    return _build(args, model)


def run() -> int:
    """Console-script entry point (`bert-mts-default-model`)."""
    return run_cli(main, None, PROG, extra_errors=(ChecksumError,))


if __name__ == "__main__":
    sys.exit(run())
