"""Commands printed in hints, spelled so that they run as printed.

A hint such as "install it: bert-mts-bases install NAME" fails with "command not found"
(and `python -m ...` with a ModuleNotFoundError) when the environment the project is
installed in is not activated: the README's commands use `.venv/bin/...`, and nothing
forces a user to activate it. So a hint names the console script beside the
interpreter that is running now: bare when that is what PATH finds (an activated
environment), else by its path; `<python> -m MODULE` where no script is installed.
Torch-free.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from pathlib import Path


def _runnable(path: str) -> str:
    """`path` relative to the current directory when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else os.path.abspath(path)


def python_command() -> str:
    """How to call the running interpreter from the current directory."""
    executable = os.path.abspath(sys.executable)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and os.path.abspath(found) == executable:
            return name
    return _runnable(executable)


def module_command(module: str, *args: str) -> str:
    """`<python> -m module args...`, runnable as printed."""
    return " ".join([python_command(), "-m", module, *args])


def _script_module(script: str) -> str | None:
    """The module a console script runs (from the installed entry points)."""
    for entry in metadata.entry_points(group="console_scripts", name=script):
        return entry.module
    return None


def script_command(script: str, *args: str) -> str:
    """`script args...` (a console script of the project), runnable as printed."""
    beside = Path(sys.executable).parent / script
    if beside.is_file():
        found = shutil.which(script)
        if found and os.path.samefile(found, beside):
            return " ".join([script, *args])
        return " ".join([_runnable(str(beside)), *args])
    module = _script_module(script)
    return module_command(module, *args) if module else " ".join([script, *args])
