"""The documentation's shell blocks, read from the pages themselves: a test that runs one
runs what users read, so a command that drifts from what works fails there."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.commands import ROOT

TRAINING_PAGE = ROOT / "docs" / "training.md"
ADD_YOUR_OWN_TASK = "## Add your own task"
MULTILABEL_TASK = "A multilabel task gives each text"


def shell_block(section: str, page: Path = TRAINING_PAGE) -> str:
    """The first ```sh block after the heading `section` of `page`."""
    text = page.read_text(encoding="utf-8")
    rest = text[text.index(section) :]
    return re.search(r"```sh\n(.*?)```", rest, re.S).group(1)


def block_commands(block: str) -> list[str]:
    """The block's commands, one line each (continuation lines joined)."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
