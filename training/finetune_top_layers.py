"""Fine-tune task branches: `python training/finetune_top_layers.py --layers 2`.

The command is `training.commands.train` (also installed as `bert-mts-train`); this
file keeps the path that the README, scripts and `torchrun` use. It edits no import
path: the project must be installed (`make install`, i.e. `pip install -e '.[train]'`),
which makes `training` importable from anywhere.
"""

import sys

try:
    from training.commands.train import run
except ModuleNotFoundError as err:
    if err.name not in ("training", "model_store"):
        raise
    print(
        "bert-mts-train: error: the project is not installed: run `make install` "
        "(or pip install -e '.[train]') first",
        file=sys.stderr,
    )
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(run())
