"""Commands printed in hints, spelled so that they run as printed.

A hint such as "install it: python -m training.bases install NAME" fails with a
ModuleNotFoundError when `python` on the user's PATH is not the environment the
project is installed in (the README's commands use `.venv/bin/python`, and nothing
forces a user to activate it). So a hint names the interpreter that is running now:
`python` when that is what PATH finds (an activated environment), else its path.
Torch-free.
"""

from __future__ import annotations

import os
import shutil
import sys


def python_command() -> str:
    """How to call the running interpreter from the current directory."""
    executable = os.path.abspath(sys.executable)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and os.path.abspath(found) == executable:
            return name
    relative = os.path.relpath(executable)
    return relative if not relative.startswith("..") else executable


def module_command(module: str, *args: str) -> str:
    """`<python> -m module args...`, runnable as printed."""
    return " ".join([python_command(), "-m", module, *args])
