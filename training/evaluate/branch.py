"""Score a saved branch on labelled examples: its own validation split, or any file.

The branch's own split is drawn exactly as during training (the file, columns and
seeded split recorded in branch.json); the branch is re-attached to its base model
(checked by sha256) and run exactly as it was validated. The command is
`bert-mts-evaluate` (`training.commands.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence

from model_store.tokenizer import PairTokenizer
from training.data.examples import Example
from training.data.readers import LoadResult
from training.data.source import DataSource
from training.data.split import split_seed_of, split_train_val
from training.encoders.base_model import BaseModel
from training.errors import UsageError
from training.fit.branch import BranchInfo
from training.fit.objectives import TaskSpec
from training.fit.task_model import TaskModel
from training.fit.trainer import encode_examples, labels_of, predict, score
from training.fit.trunk_cache import TrunkStates


def recorded_source(info: BranchInfo) -> DataSource:
    """The data file (and columns) the branch was trained on, as branch.json records it."""
    training_args = info.meta.get("training_args", {})
    if "data" not in training_args:
        raise UsageError(f"{info.path} does not record its training data: pass --data FILE")
    return DataSource.from_json(training_args["data"])


def validation_split(info: BranchInfo, spec: TaskSpec) -> tuple[list[Example], LoadResult]:
    """The branch's own validation examples (and what reading the file gave)."""
    training_args = info.meta.get("training_args", {})
    loaded = recorded_source(info).read(spec.parse_label, limit=training_args.get("limit"))
    examples = split_train_val(
        loaded.examples, training_args.get("val_fraction", 0.1), split_seed_of(training_args)
    )[1]
    return examples, loaded


def score_branch(
    model: TaskModel,
    info: BranchInfo,
    base: BaseModel,
    examples: Sequence[Example],
    batch_size: int = 64,
) -> tuple[float, float]:
    """(loss, metric) of the branch on `examples`."""
    tokenizer = PairTokenizer.from_dir(base.path, int(info.meta.get("max_seq_len", 128)))
    rows = encode_examples(tokenizer, model.spec, examples)
    states = TrunkStates(model, tokenizer, rows, budget_bytes=0)  # one pass: nothing to reuse
    outputs = predict(model, states, len(rows), batch_size)
    return score(model.spec, outputs, labels_of(examples))
