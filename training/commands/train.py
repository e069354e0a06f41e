"""Fine-tune the top K encoder layers plus a head per task; save each as a task branch.

    bert-mts-train --layers 2            # every preset task
    python training/finetune_top_layers.py --task similarity --layers 4 \\
        --base-model /models/bert-base-uncased --epochs 5 --out models/branches
    python training/finetune_top_layers.py --task topic --kind classification \\
        --labels sports,politics,science --train-file topics.csv --layers 2
    python training/finetune_top_layers.py --task tags --kind multilabel \\
        --labels funny,sad,long --train-file tags.csv --layers 2  # label: "funny|long"
    python training/finetune_top_layers.py --task sentiment --layers 2 \\
        --teacher models/branches/sentiment/20261122T215734Z-6942583c  # distil

(`python training/finetune_top_layers.py` is the same command, by path, for torchrun.)
The embeddings and layers [0, L-K) stay frozen (and their outputs are cached, so each
epoch runs only the top K layers); the best epoch on a seeded validation split carved
from the train file is saved under `<out>/<task>/<version>/`. How that epoch is chosen,
and how many epochs a file of a given size gets without --epochs, is decided in
training/fit/trainer.py (`Selection`, `epochs_for`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store.locations import branches_dir, model_repository
from model_store.tasks import INPUTS, TRAINED_KINDS, TaskDefinition
from model_store.tokenizer import DEFAULT_MAX_SEQ_LEN, PairTokenizer
from training.commands.base_choice import (
    StoreBase,
    choose_base,
    describe_choice,
    read_store_base,
)
from training.commands.cli import (
    OneLineArgumentParser,
    UsageError,
    add_data_file_arguments,
    columns_for,
    run_cli,
)
from training.data.examples import CUSTOM_COLUMNS
from training.data.presets import PRESETS
from training.data.source import DataSource
from training.encoders import bases
from training.encoders.base_model import (
    BaseModelSpec,
    load_base_model,
)
from training.fit import distributed
from training.fit.distill import (
    DEFAULT_ALPHA,
    DEFAULT_TEMPERATURE,
    Distillation,
    DistillConfig,
    load_teacher,
)
from training.fit.objectives import task_spec
from training.fit.run import DataPlan, load_task_data, train_task
from training.fit.task_model import POOLINGS
from training.fit.trainer import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    MIN_UPDATES,
    PAIR_ORDERS,
    TrainConfig,
)
from training.fit.trunk_cache import CACHE_DTYPES

PROG = "bert-mts-train"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Fine-tune the top K layers of a BERT base per task and save task branches.",
    )
    task = parser.add_argument_group(
        "task", "a preset's name is enough; another task is defined by these options"
    )
    task.add_argument(
        "--task",
        metavar="NAME",
        help=f"default: every preset ({', '.join(PRESETS)}); another name defines a new task",
    )
    task.add_argument("--kind", choices=TRAINED_KINDS, help="what the task predicts (new tasks)")
    task.add_argument(
        "--input",
        choices=INPUTS,
        help="one text or a text pair (default: pair when --text-b-column is given)",
    )
    task.add_argument(
        "--labels",
        metavar="A,B,...",
        help="label names, in index order (classification; binary: negative,positive); "
        "the file may hold the names or 0-based indices; multilabel: the names a row may "
        "have, its label column listing them separated by '|' (or a JSON list)",
    )
    task.add_argument(
        "--range", nargs=2, type=float, metavar=("LO", "HI"), help="value range (regression)"
    )
    parser.add_argument(
        "--layers", required=True, type=int, metavar="K", help="layers to tune (1..L)"
    )
    parser.add_argument(
        "--base-model",
        type=Path,
        metavar="PATH",
        help="Hugging Face BERT or MPNet checkpoint directory, or a base's name: "
        "all-mpnet-base-v2 (12 layers, installed on first use) or all-minilm-l6-v2 (6 layers) "
        "(default: the base of --store, else all-mpnet-base-v2 or $BERT_MTS_BASE_MODEL)",
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        help="the model repository the branches are for: its base, tokenizer and maximum "
        f"length are used (default: the default model's, {model_repository()}, if it exists; "
        "another shipped model's with `--store models/NAME`)",
    )
    store.add_argument(
        "--no-store",
        action="store_true",
        help="follow no repository (a branch for a new model)",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--train-file",
        type=Path,
        help="train on this file instead of the task's file in --data-dir",
    )
    parser.add_argument("--out", type=Path, default=branches_dir())
    parser.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"default: {MIN_EPOCHS}, or more on a small file: enough for {MIN_UPDATES} "
        f"optimizer steps (at most {MAX_EPOCHS})",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the tuned layers")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head")
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of steps warming up")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument(
        "--max-seq-len",
        type=int,
        help=f"default: the store's, else {DEFAULT_MAX_SEQ_LEN}",
    )
    parser.add_argument("--pooling", choices=POOLINGS, default="cls")
    parser.add_argument(
        "--pair-order",
        choices=PAIR_ORDERS,
        default="ab",
        help="sentence order of training pairs: as in the file, swapped, or both",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-seed",
        type=int,
        metavar="N",
        help="seed of the validation split (default: --seed); fix it to compare training seeds "
        "on one split",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N examples")
    parser.add_argument(
        "--no-trunk-cache", action="store_true", help="recompute the trunk per batch"
    )
    parser.add_argument("--cache-budget-mb", type=float, default=2048.0)
    parser.add_argument("--cache-dtype", choices=tuple(CACHE_DTYPES), default="float32")
    parser.add_argument(
        "--cache-disk-budget-mb",
        type=float,
        default=0.0,
        metavar="MB",
        help="trunk states beyond --cache-budget-mb go to a temporary file, up to this size "
        "(default 0: recomputed instead)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where that file goes (default: the system's temporary directory)",
    )
    parser.add_argument(
        "--grad-accumulation",
        type=int,
        default=1,
        metavar="N",
        help="run each batch as N smaller passes with summed gradients (same update, less memory)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last completed epoch (every run saves "
        "one under <out>/.checkpoints/; same arguments and data required)",
    )
    distill = parser.add_argument_group(
        "distillation", "learn from a deeper branch of the same task as well as the labels"
    )
    distill.add_argument(
        "--teacher",
        type=Path,
        metavar="BRANCH_DIR",
        help="a branch of this task on the same base (a version directory, or a task "
        "directory for its newest version)",
    )
    distill.add_argument(
        "--distill-temperature",
        type=float,
        metavar="T",
        help=f"softening of the teacher's probabilities (default {DEFAULT_TEMPERATURE:g})",
    )
    distill.add_argument(
        "--distill-alpha",
        type=float,
        metavar="A",
        help=f"weight of the teacher's term, 1 - A on the labels (default {DEFAULT_ALPHA:g})",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_file_arguments(parser)
    return parser


def check_arguments(
    args: argparse.Namespace, base: BaseModelSpec, store: StoreBase | None = None
) -> None:
    """Refuse what would fail later, before any weights are loaded or data is read."""
    depth = base.num_layers
    if not 1 <= args.layers <= depth:
        hint = ""
        deeper = bases.deeper_than(depth) if args.layers > depth else []
        if deeper:  # only a base deeper than this one is a way out
            other = deeper[0]
            hint = (
                f"; for more layers use a deeper --base-model, e.g. {other.name} "
                f"({other.layers} layers, installed on first use; ahead of time: "
                f"{bases.install_hint(other.name)})"
            )
            if store is not None:
                hint += f" with --no-store (it is the base of {store.store})"
        raise UsageError(
            f"--layers {args.layers}: the base model {base.name} has {depth} layers, "
            f"so K must be 1..{depth}{hint}"
        )
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.limit is not None and args.limit < 2:
        raise UsageError(
            f"--limit must be at least 2 (a train and a validation example), got {args.limit}"
        )
    if not 3 <= args.max_seq_len <= base.config.max_sequence_length:
        raise UsageError(
            f"--max-seq-len must be 3..{base.config.max_sequence_length} for this base, "
            f"got {args.max_seq_len}"
        )
    defining = [
        option
        for option, value in (
            ("--kind", args.kind),
            ("--input", args.input),
            ("--labels", args.labels),
            ("--range", args.range),
            ("--train-file", args.train_file),
        )
        if value is not None
    ]
    if args.task is None and defining:
        raise UsageError(f"{defining[0]} needs --task NAME (without it, every preset trains)")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.cache_dir is not None and not args.cache_dir.is_dir():
        raise UsageError(f"--cache-dir {args.cache_dir}: no such directory")
    if args.teacher is None:
        given = "--distill-temperature" if args.distill_temperature is not None else None
        given = given or ("--distill-alpha" if args.distill_alpha is not None else None)
        if given:
            raise UsageError(f"{given} needs --teacher BRANCH_DIR")
    elif args.task is None:
        raise UsageError("--teacher needs --task NAME: a teacher teaches one task")


def split_seed(args: argparse.Namespace) -> int:
    return args.seed if args.split_seed is None else args.split_seed


def distill_config(args: argparse.Namespace) -> DistillConfig | None:
    if args.teacher is None:
        return None
    try:
        return DistillConfig(
            temperature=(
                DEFAULT_TEMPERATURE
                if args.distill_temperature is None
                else args.distill_temperature
            ),
            alpha=DEFAULT_ALPHA if args.distill_alpha is None else args.distill_alpha,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def train_config(args: argparse.Namespace) -> TrainConfig:
    try:
        return TrainConfig(
            layers=args.layers,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            head_lr=args.head_lr,
            warmup=args.warmup,
            weight_decay=args.weight_decay,
            pooling=args.pooling,
            pair_order=args.pair_order,
            seed=args.seed,
            trunk_cache=not args.no_trunk_cache,
            cache_budget_mb=args.cache_budget_mb,
            cache_dtype=args.cache_dtype,
            cache_disk_budget_mb=args.cache_disk_budget_mb,
            grad_accumulation=args.grad_accumulation,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def task_definition(args: argparse.Namespace) -> TaskDefinition:
    """The task `--task` names: a preset as it is, or a new task from the options."""
    name = args.task
    labels = tuple(label.strip() for label in args.labels.split(",")) if args.labels else ()
    value_range = tuple(args.range) if args.range else None
    if name in PRESETS:
        preset = PRESETS[name].definition
        given = (
            (args.kind, preset.kind),
            (args.input, preset.input),
            (labels or None, preset.label_names),
            (value_range, preset.value_range),
        )
        if any(value is not None and value != expected for value, expected in given):
            raise UsageError(
                f"{name} is a preset ({preset.describe()}); "
                "a task with another definition needs another name"
            )
        return preset
    if args.kind is None:
        raise UsageError(f"{name} is not a preset ({', '.join(PRESETS)}): define it with --kind")
    if args.kind == "binary" and not labels:
        labels = ("negative", "positive")
    if args.kind == "multilabel" and not labels:
        raise UsageError(
            f"multilabel task {name} needs its label names: --labels a,b,c (a row's label "
            "column lists the ones it has, separated by '|'; empty: none)"
        )
    if args.kind != "regression" and args.range:
        raise UsageError(f"--range is for regression tasks, not {args.kind}")
    if args.kind == "regression" and args.labels:
        raise UsageError("--labels is for tasks with label names, not regression")
    if args.kind == "regression" and value_range is None:
        raise UsageError(
            f"regression task {args.task} needs its value range: add --range LO HI "
            "(e.g. --range 0 5); values outside it are errors"
        )
    return TaskDefinition(
        name=name,
        kind=args.kind,
        input=args.input or ("pair" if args.text_b_column else "text"),
        label_names=labels,
        value_range=value_range,
    )


def data_source(args: argparse.Namespace, definition: TaskDefinition) -> DataSource:
    """Where a task's examples come from: --train-file, else the preset's shared file."""
    preset = PRESETS.get(definition.name)
    if args.train_file is None and preset is None:
        raise UsageError(f"task {definition.name} needs its data: --train-file FILE")
    path = args.train_file or args.data_dir / preset.data.filename
    default = preset.data.columns if preset else CUSTOM_COLUMNS
    columns = columns_for(args, definition.name, definition.pair, default)
    return DataSource(path, columns, args.format, args.skip_bad_rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wanted_store = None if args.no_store else args.store or model_repository()
    store = (
        None
        if wanted_store is None
        else read_store_base(wanted_store, explicit=args.store is not None)
    )
    given_base = args.base_model
    args.base_model, base_spec = choose_base(args.base_model, store)
    if args.max_seq_len is None:
        args.max_seq_len = store.max_seq_len if store else DEFAULT_MAX_SEQ_LEN
    elif store is not None and args.max_seq_len != store.max_seq_len:
        raise UsageError(
            f"--max-seq-len {args.max_seq_len}: {store.store} serves {store.max_seq_len} "
            "tokens; drop the option, or pass --no-store"
        )
    check_arguments(args, base_spec, store)
    config = train_config(args)
    distill = distill_config(args)
    distributed.init_from_env()  # torchrun: join the other ranks (training/fit/distributed.py)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    definitions = (
        [preset.definition for preset in PRESETS.values()]
        if args.task is None
        else [task_definition(args)]
    )
    tasks = [task_spec(definition) for definition in definitions]
    plan = DataPlan(args.limit, args.val_fraction, split_seed(args))
    data = {
        spec.name: load_task_data(spec, data_source(args, spec.definition), plan) for spec in tasks
    }
    base = load_base_model(args.base_model)
    tokenizer = PairTokenizer.from_dir(base.path, args.max_seq_len)
    distillation = (
        Distillation(load_teacher(args.teacher, base, tokenizer, tasks[0]), distill)
        if distill
        else None
    )
    # Every check has passed, every file is read: training starts, and says on what.
    log.info("%s", describe_choice(given_base, base_spec, store, wanted_store))
    for spec in tasks:
        out = train_task(
            spec,
            data[spec.name],
            base,
            tokenizer,
            config,
            plan,
            args.out,
            distillation=distillation,
            progress=not args.quiet,
            resume=args.resume,
            cache_dir=args.cache_dir,
        )
        if out is not None:
            print(out.summary)
    return 0


def run() -> int:
    """Console-script entry point (`bert-mts-train`, and `training/finetune_top_layers.py`)."""
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(run())
