"""Print benchmark results as a Markdown table headed by the exact command and machine,
so every figure pasted into docs/results.md carries its provenance."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone


def provenance() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # `python -m benchmarks.NAME`, as the benchmarks are run; else the script's path.
    program = ["-m", spec.name] if spec is not None else [os.path.relpath(sys.argv[0])]
    command = shlex.join([*program, *sys.argv[1:]])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return f"command: python {command}\nmachine: {machine}\ndate: {date}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def print_report(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"## {title}\n\n{provenance()}\n\n{markdown_table(headers, rows)}")
