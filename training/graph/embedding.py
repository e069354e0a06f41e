"""The base's own sentence embedding as a task branch: kind `embedding`, K = 0.

Both bases are sentence-transformers models whose embedding is the mean of the last
layer's token vectors over the attention mask, L2-normalised. That is a task the merged
graph can answer with no tuned layer at all: its branch forks at the top of the frozen
base (fork depth L) and its "head" is the pooling. Written as an ordinary branch
(branch.json plus an empty branch.safetensors), it is published, kept, re-merged and
removed like any other task; the graph then holds every frozen layer once, and a row
asking an embedding and a classifier runs the shared layers once.

The graph outputs the pooled vector; normalising is how the service reads an embedding
(as softmax is how it reads a classifier's logits), so clients that ask for the raw
vector (text-embeddings-inference's `normalize: false`) can have it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from model_store.tasks import TaskDefinition
from model_store.tokenizer import PairTokenizer
from training.encoders.base_model import BaseModel
from training.errors import MergeError
from training.fit.branch import save_branch
from training.fit.objectives import task_spec
from training.fit.task_model import TaskModel

EMBEDDING_TASK = "embedding"
POOLING = "mean"
DEFAULT_MAX_SEQ_LEN = 128
_POOLING_CONFIG = Path("1_Pooling") / "config.json"


def embedding_definition(base: BaseModel, name: str = EMBEDDING_TASK) -> TaskDefinition:
    return TaskDefinition(
        name=name, kind="embedding", input="text", dimensions=base.spec.config.hidden_size
    )


def check_base_pooling(base: BaseModel) -> None:
    """Refuse a base whose sentence-transformers config pools otherwise than by the mean
    (the graph's embedding would not be the base's own); a plain checkpoint without that
    config is pooled by the mean, as both bases are."""
    path = Path(base.path) / _POOLING_CONFIG
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MergeError(f"{path} is not readable JSON: {err}") from err
    modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise MergeError(
            f"{base.name} pools by {', '.join(modes) or 'nothing'} ({path}); the embedding "
            "task serves mean pooling only"
        )


def write_embedding_branch(
    base: BaseModel,
    out_dir: Path,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    name: str = EMBEDDING_TASK,
) -> Path:
    """Write the embedding branch of `base` under `out_dir/<name>/<version>/`."""
    check_base_pooling(base)
    model = TaskModel(base.encoder, task_spec(embedding_definition(base, name)), 0, POOLING)
    tokenizer = PairTokenizer.from_dir(base.path, max_seq_len)
    return save_branch(model, base, tokenizer, out_dir, {}, {})


def temporary_embedding_branch(
    base: BaseModel, max_seq_len: int
) -> tuple[Path, tempfile.TemporaryDirectory]:
    """An embedding branch in a temporary directory (kept by the caller's repository or
    merged at once); the directory lives as long as the returned handle."""
    scratch = tempfile.TemporaryDirectory(prefix="embedding-branch-")
    return write_embedding_branch(base, Path(scratch.name), max_seq_len), scratch
