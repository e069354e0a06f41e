"""Fine-tune task branches: `python training/finetune_top_layers.py --layers 2`.

The command is `training.commands.train` (also installed as `bert-mts-train`); this
file keeps the path that the README, scripts and `torchrun` use. It edits no import
path: the project must be installed (`make install`, i.e. `pip install -e '.[train]'`),
which makes `training` importable from anywhere.
"""

import os
import sys
from pathlib import Path

# The console script's name, which every error of the command starts with.
PROG = "bert-mts-train"


def _shown(path: Path) -> str:
    """`path` relative to the current directory when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def not_installed_hint(root: Path) -> str:
    """What to do when this Python lacks the project: use the checkout's environment
    when `make install` has made one (a system `python3` does not see it), else make it."""
    venv = root / ".venv" / "bin"
    if (venv / "python").is_file():
        script = _shown(root / "training" / "finetune_top_layers.py")
        return (
            f"use the environment's: {_shown(venv / 'python')} {script} ... "
            f"(or `source {_shown(venv / 'activate')}` first)"
        )
    return "run `make install` (or pip install -e '.[train]') first"


try:
    from training.commands.train import run
except ModuleNotFoundError as err:
    if err.name not in ("training", "model_store"):
        raise
    print(
        f"{PROG}: error: the project is not installed in this Python ({sys.executable}): "
        + not_installed_hint(Path(__file__).resolve().parent.parent),
        file=sys.stderr,
    )
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(run())
