"""docs/training.md's multilabel block, run as printed (with test_readme_walk's
substitutions): serve, train a multilabel task on a file written here, publish it live,
answer it (label names, one probability and one threshold per label), remove it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from model_store.repository import list_versions
from tests.support.commands import ROOT
from tests.support.readme import MULTILABEL_TASK, shell_block
from tests.support.samples import write_tags
from tests.support.servers import free_port
from tests.support.tiny_store import TinyBranches
from tests.training.test_readme_walk import adapt


def test_the_multilabel_block_runs_as_printed(
    tiny: TinyBranches, repository: Path, tmp_path: Path
) -> None:
    block = shell_block(MULTILABEL_TASK)
    for step in ("--kind multilabel", "bert-mts-serve", "publish", "--remove", "kill $!"):
        assert step in block, step
    write_tags(tmp_path / "tags.csv")
    script = adapt(block, repository, free_port(), tmp_path, tiny.base_dir)
    script = script.replace("tags.csv", str(tmp_path / "tags.csv"))
    script = "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script
    env = {k: v for k, v in os.environ.items() if k != "BERT_MTS_ADMIN_TOKEN"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env={**env, "BERT_MTS_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    out = result.stdout
    assert out.count('"result":"loaded"') == 2, out
    # curl prints the answers back to back, without newlines
    start = out.rindex("{", 0, out.index('"task":"tags"'))
    answer, _ = json.JSONDecoder().raw_decode(out, start)
    assert answer["kind"] == "multilabel" and len(answer["probabilities"]) == 3
    assert len(answer["thresholds"]) == 3
    on = [
        name
        for name, p, t in zip(
            ("funny", "sad", "long"), answer["probabilities"], answer["thresholds"], strict=True
        )
        if p >= t
    ]
    assert answer["label_names"] == on
    names = [[t.name for t in v.manifest.tasks] for v in list_versions(repository)]
    assert "tags" not in names[-1] and any("tags" in n for n in names), names
    assert "Traceback" not in result.stderr, result.stderr
