"""Print benchmark results as a Markdown table headed by the exact command and machine,
so every figure pasted into docs/results.md carries its provenance."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path


def cpu_description() -> str:
    """The CPU's model and the instruction sets int8 speed and accuracy depend on (from
    /proc/cpuinfo, as lscpu reads it): without VNNI, u8 x s8 products saturate."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line and line.strip())
    model = " ".join(fields.get("model name\t", fields.get("model name", "unknown")).split())
    flags = set(fields.get("flags\t\t", fields.get("flags\t", "")).split())
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    present = [flag for flag in wanted if flag in flags]
    vnni = "yes" if {"avx512_vnni", "avx_vnni"} & flags else "no"
    return f"{model}; flags {' '.join(present) or 'none of ' + '/'.join(wanted)}; VNNI {vnni}"


def provenance() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # `python -m benchmarks.NAME`, as the benchmarks are run; else the script's path.
    program = ["-m", spec.name] if spec is not None else [os.path.relpath(sys.argv[0])]
    command = shlex.join([*program, *sys.argv[1:]])
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_description()}), "
        f"Python {platform.python_version()}"
    )
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
