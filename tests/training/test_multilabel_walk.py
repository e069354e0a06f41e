"""docs/training.md's multilabel block, run as printed (with test_readme_walk's
substitutions): serve, train a multilabel task on a file written here, publish it live,
answer it (label names, one probability and one threshold per label), remove it."""

from __future__ import annotations

import json
from pathlib import Path

from model_store.repository import list_versions
from tests.support.readme import MULTILABEL_TASK, shell_block
from tests.support.samples import write_tags
from tests.support.tiny_store import TinyBranches
from tests.training.test_readme_walk import run_block


def test_the_multilabel_block_runs_as_printed(
    tiny: TinyBranches, repository: Path, tmp_path: Path
) -> None:
    block = shell_block(MULTILABEL_TASK)
    for step in ("--kind multilabel", "bert-mts-serve", "publish", "--remove", "kill $!"):
        assert step in block, step
    write_tags(tmp_path / "tags.csv")
    extra = {"tags.csv": str(tmp_path / "tags.csv")}
    result = run_block(block, repository, tmp_path, tiny.base_dir, extra)
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
