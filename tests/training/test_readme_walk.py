"""docs/training.md's "Add your own task" block, run as printed: serve with a token, train a
task, publish it, reload, query it, remove it, reload, prune, stop. The block is read
from docs/training.md itself, so a command that drifts from what works fails here. Only what
must differ on a test machine is substituted: the environment (`.venv/bin/`: the
directory of this interpreter, whose console scripts run this checkout's code), the
store (a tiny repository the test builds), the port (a free one), the training file
(written here), the branch folder (training's default, `models/branches`, relative to
the working directory: here one in a temporary directory) and the base (the tiny one),
and training runs one epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from model_store.repository import list_versions
from tests.support.commands import ROOT
from tests.support.readme import ADD_YOUR_OWN_TASK, shell_block
from tests.support.samples import write_topics
from tests.support.servers import free_port
from tests.support.tiny_store import TinyBranches


def adapt(block: str, repository: Path, port: int, work: Path, base: Path) -> str:
    script = block.replace("\\\n", " ")  # one line per command
    script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    script = script.replace("models/default", str(repository))
    script = script.replace("localhost:8000", f"127.0.0.1:{port}")
    script = script.replace("topics.csv", str(work / "topics.csv"))
    script = script.replace("models/branches", str(work / "branches"))
    script = script.replace(
        f"bert-mts-serve --model-dir {repository}",
        f"bert-mts-serve --model-dir {repository} --port {port} --provider cpu",
    )
    lines = []
    for line in script.splitlines():
        if "bert-mts-train" in line:
            line += f" --out {work / 'branches'} --base-model {base}"
            line += " --max-seq-len 32 --epochs 1 --quiet"
        if "bert-mts-store publish" in line:
            line += f" --base-model {base}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_block(
    block: str, repository: Path, work: Path, base: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A docs block as `adapt` rewrites it (plus `extra` replacements), run by bash with
    -euo pipefail from the checkout; its jobs are killed when it ends."""
    script = adapt(block, repository, free_port(), work, base)
    for printed, used in (extra or {}).items():
        script = script.replace(printed, used)
    # A command that fails ends the block before its `kill`: the service would keep the
    # output pipes open, and the run would wait for them until its timeout.
    script = "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script
    env = {k: v for k, v in os.environ.items() if k != "BERT_MTS_ADMIN_TOKEN"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        # The console scripts import the project from this checkout.
        env={**env, "BERT_MTS_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_add_your_own_task_block_runs_as_printed(
    tiny: TinyBranches, repository: Path, tmp_path: Path
) -> None:
    block = shell_block(ADD_YOUR_OWN_TASK)
    steps = ("token_urlsafe(32)", "bert-mts-serve", "bert-mts-train", "publish", "--remove")
    for step in (*steps, "prune"):
        assert step in block, step
    write_topics(tmp_path / "topics.csv")
    result = run_block(block, repository, tmp_path, tiny.base_dir)
    out = result.stdout
    assert out.count('"result":"loaded"') == 2, out
    assert '"task":"topic"' in out and '"label_name":' in out, out
    assert "pruned " in out, out
    names = [[t.name for t in v.manifest.tasks] for v in list_versions(repository)]
    assert "topic" not in names[-1] and len(names) == 2, names
    assert "Traceback" not in result.stderr, result.stderr
