"""`python -m model_store list|rollback|prune --store DIR`: see `model_store.commands`."""

import sys

from model_store.commands import run

sys.exit(run())
