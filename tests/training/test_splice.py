"""Publishing by splicing the changed task's piece into the current version's graphs
(`training.graph.splice`): the spliced graphs compute what a full rebuild's do, for
every variant, the other tasks keep bit-identical outputs, removing a task leaves none
of its nodes behind, and whatever a splice cannot do is built in full and said so.

On a random 4-layer tiny base: sentiment and paraphrase tune K=1 (fork 3), similarity
K=2 (fork 2, a fork no other task has: its piece also narrows the frozen path).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from model_store.manifest import load_manifest
from model_store.runtime import CPU, MultiTaskSession
from training.graph import merge
from training.graph.merge import FP32_TOLERANCE, load_branches, probe_batch, read_branches
from training.graph.merged_model import MergedModel
from training.graph.publish import publish
from training.graph.publish_report import publish_summary
from training.graph.splice import LAYOUT_KEY, SpliceError, plan_splice

torch = pytest.importorskip("torch")

VARIANTS = ("int8", "fp16")
# The spliced graphs hold the full rebuild's nodes, so they compute the same numbers;
# stated per variant all the same (a splice changes no arithmetic).
SPLICE_TOLERANCE = {"fp32": 1e-6, "int8": 1e-6, "fp16": 1e-3}


@dataclasses.dataclass
class Tiny:
    root: Path
    base_dir: Path
    base: object
    tokenizer: object
    branches: dict[str, Path]

    def publish(self, repository: Path, *branches: str, remove=(), variants=VARIANTS):
        return publish(
            repository,
            [self.branches[name] for name in branches],
            remove,
            base_model=self.base_dir,
            variants=variants,
            create=not repository.exists(),
        )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    from model_store.tokenizer import PairTokenizer
    from tests.support.tiny_store import tiny_base_dir
    from training.encoders.base_model import load_base_model
    from training.fit.branch import save_branch
    from training.fit.objectives import preset_spec
    from training.fit.task_model import TaskModel

    root = tmp_path_factory.mktemp("splice")
    base_dir = tiny_base_dir(root / "base", layers=4)
    base = load_base_model(base_dir)
    tokenizer = PairTokenizer.from_dir(base_dir, 32)
    made = {}
    for seed, (name, task, k) in enumerate(
        [
            ("sentiment", "sentiment", 1),
            ("paraphrase", "paraphrase", 1),
            ("similarity", "similarity", 2),
            ("similarity-2", "similarity", 2),
            ("similarity-deep", "similarity", 3),
            ("paraphrase-2", "paraphrase", 2),
        ]
    ):
        torch.manual_seed(seed)
        model = TaskModel(base.encoder, preset_spec(task), k, "cls")
        made[name] = save_branch(model, base, tokenizer, root / "trained", {}, {})
    return Tiny(root, base_dir, base, tokenizer, made)


def outputs(tiny: Tiny, manifest, branches: list[str], variant: str) -> dict[str, np.ndarray]:
    """The graph's answers to the publish probe batch (single- and multi-task rows)."""
    loaded = load_branches(read_branches([tiny.branches[b] for b in branches]), tiny.base)
    batch, mask = probe_batch(tiny.tokenizer, loaded)
    return MultiTaskSession(manifest, variant, providers=[CPU]).run(batch, mask)


def graph(manifest, variant: str = "fp32") -> onnx.ModelProto:
    return onnx.load(str(manifest.graph_path(variant)))


@pytest.fixture(scope="module")
def spliced(tiny: Tiny):
    """A repository of sentiment and paraphrase, then similarity published into it."""
    repository = tiny.root / "repository"
    before = tiny.publish(repository, "sentiment", "paraphrase")
    after = tiny.publish(repository, "similarity")
    return repository, before, after


@pytest.fixture(scope="module")
def rebuilt(tiny: Tiny):
    return tiny.publish(tiny.root / "full", "sentiment", "paraphrase", "similarity")


def test_a_new_task_at_a_new_fork_is_spliced_and_matches_the_full_rebuild(
    tiny, spliced, rebuilt
) -> None:
    _, before, after = spliced
    assert before.manifest.extra["graph_build"] == "graphs built in full (a new repository)"
    assert after.manifest.extra["graph_build"].startswith("graphs spliced into ")
    assert publish_summary(after.manifest, ["similarity"])[0].startswith("  graphs spliced")
    assert float(after.manifest.extra["parity"]["fp32"]) <= FP32_TOLERANCE  # vs PyTorch
    names = ["sentiment", "paraphrase", "similarity"]
    for variant, tolerance in SPLICE_TOLERANCE.items():
        ours = outputs(tiny, after.manifest, names, variant)
        full = outputs(tiny, rebuilt.manifest, names, variant)
        for task in names:
            assert ours[task].shape == full[task].shape
            assert np.abs(ours[task] - full[task]).max() <= tolerance, (variant, task)
        # node for node the same graph as the full export's (names aside)
        assert len(graph(after.manifest, variant).graph.node) == len(
            graph(rebuilt.manifest, variant).graph.node
        ), variant
    assert after.manifest.extra["fusion"]["complete"]


def test_a_fork_inserted_above_the_first_block_matches_the_full_rebuild(tiny) -> None:
    """Forks 3 and 1, then a task forking at 2: the frozen path's narrowing at 1 must
    now keep the rows that need depth 2, and the piece narrows at 2 itself."""
    names = ["sentiment", "similarity-deep", "paraphrase-2"]
    repository = tiny.root / "deep"
    tiny.publish(repository, *names[:2])
    after = tiny.publish(repository, names[2])
    assert after.manifest.extra["graph_build"].startswith("graphs spliced into ")
    full = tiny.publish(tiny.root / "deep-full", *names)
    for variant, tolerance in SPLICE_TOLERANCE.items():
        ours = outputs(tiny, after.manifest, names, variant)
        theirs = outputs(tiny, full.manifest, names, variant)
        for task in ("sentiment", "similarity", "paraphrase"):
            assert ours[task].shape == theirs[task].shape, (variant, task)
            assert np.abs(ours[task] - theirs[task]).max() <= tolerance, (variant, task)


def test_the_other_tasks_stay_bit_identical_across_a_splice(tiny, spliced) -> None:
    _, before, after = spliced
    kept = ["sentiment", "paraphrase"]
    loaded = load_branches(read_branches([tiny.branches[b] for b in kept]), tiny.base)
    batch, mask = probe_batch(tiny.tokenizer, loaded)  # single- and two-task rows
    widened = np.concatenate([mask, np.zeros((len(mask), 1), dtype=bool)], axis=1)
    for variant in ("fp32", *VARIANTS):
        old = MultiTaskSession(before.manifest, variant, providers=[CPU]).run(batch, mask)
        new = MultiTaskSession(after.manifest, variant, providers=[CPU]).run(batch, widened)
        for task in kept:
            assert np.array_equal(new[task], old[task]), (variant, task)


def test_replacing_and_removing_by_splice_leave_nothing_behind(tiny, spliced) -> None:
    repository, _, after = spliced
    replaced = tiny.publish(repository, "similarity-2")
    assert replaced.manifest.extra["graph_build"].startswith("graphs spliced into ")
    # the replaced branch's nodes are gone; the frozen layer its piece brought (fork 2
    # was new then) stays, it is the frozen path's now
    piece = f"similarity@{after.manifest.task('similarity').branch_version}.2-3/"
    for variant in ("fp32", *VARIANTS):
        model = graph(replaced.manifest, variant).graph
        names = [n.name for n in model.node] + [i.name for i in model.initializer]
        assert not [name for name in names if name.startswith(piece + "/branch/")], variant
        assert [name for name in names if name.startswith(piece + "/frozen.2/")], variant
    # paraphrase forks where sentiment does: removing it keeps the frozen path's shape
    removed = tiny.publish(repository, remove=["paraphrase"])
    assert removed.manifest.extra["graph_build"].startswith("graphs spliced into ")
    assert [t.name for t in removed.manifest.tasks] == ["sentiment", "similarity"]
    added = tiny.publish(repository, "paraphrase")
    again = tiny.publish(repository, remove=["paraphrase"])
    for variant in ("fp32", *VARIANTS):
        small, big = graph(removed.manifest, variant), graph(added.manifest, variant)
        shrunk = graph(again.manifest, variant)
        assert len(shrunk.graph.node) == len(small.graph.node) < len(big.graph.node)
        assert len(shrunk.graph.initializer) <= len(small.graph.initializer)
        size = again.manifest.graph_path(variant).stat().st_size
        assert size <= removed.manifest.graph_path(variant).stat().st_size + 1024, variant
        paraphrase = f"paraphrase@{added.manifest.task('paraphrase').branch_version}."
        assert [n for n in big.graph.node if n.name.startswith(paraphrase)]
        assert not [n for n in shrunk.graph.node if n.name.startswith(paraphrase)]
        assert [o.name for o in shrunk.graph.output] == ["sentiment_logits", "similarity_logits"]
    # the same change spliced again gives the same bytes, stored once (hard links)
    back = tiny.publish(repository, "paraphrase")
    assert back.manifest.extra["graph_build"].startswith("graphs spliced into ")
    for variant in ("fp32", *VARIANTS):
        name = back.manifest.graphs[variant]
        assert back.manifest.files[name] == added.manifest.files[name], variant
    assert back.shared_bytes >= added.manifest.graph_path("fp32").stat().st_size
    # the spliced versions still answer as a full build of their tasks does
    full = tiny.publish(tiny.root / "full-2", "sentiment", "similarity-2")
    ours = outputs(tiny, again.manifest, ["sentiment", "similarity-2"], "fp32")
    theirs = outputs(tiny, full.manifest, ["sentiment", "similarity-2"], "fp32")
    for task in ours:
        assert np.abs(ours[task] - theirs[task]).max() <= SPLICE_TOLERANCE["fp32"]


def test_a_fork_left_without_a_task_is_built_in_full(tiny, tmp_path) -> None:
    repository = tmp_path / "repository"
    tiny.publish(repository, "sentiment", "similarity", variants=())
    published = tiny.publish(repository, remove=["similarity"], variants=())
    assert published.manifest.extra["graph_build"] == (
        "graphs built in full (a fork depth would be left without a task (the frozen path "
        "changes shape))"
    )
    assert LAYOUT_KEY in published.manifest.extra  # the next publish may splice again


def _plan(tiny: Tiny, previous, names: list[str], variants=("fp32",)):
    loaded = load_branches(read_branches([tiny.branches[n] for n in names]), tiny.base)
    merged = MergedModel(tiny.base.encoder, [b.model for b in loaded])
    records = [
        {
            "name": b.info.task,
            "branch_version": b.info.version,
            "pooling": "cls",
            "layers": b.info.layers,
        }
        for b in loaded
    ]
    return plan_splice(previous, merged, records, variants, True, dict(previous.base_model), 32)


def test_graphs_of_another_build_or_base_are_built_in_full(tiny, spliced) -> None:
    _, before, _ = spliced
    previous = load_manifest(before.manifest.directory)
    assert not isinstance(_plan(tiny, previous, ["sentiment", "similarity"]), str)
    other = dataclasses.replace(
        previous,
        extra={**previous.extra, LAYOUT_KEY: {**previous.extra[LAYOUT_KEY], "libraries": {}}},
    )
    assert "built by another version" in _plan(tiny, other, ["sentiment", "similarity"])
    unlaid = dataclasses.replace(
        previous, extra={k: v for k, v in previous.extra.items() if k != LAYOUT_KEY}
    )
    assert "another version" in _plan(tiny, unlaid, ["sentiment", "similarity"])
    shorter = dataclasses.replace(previous, max_seq_len=16)
    assert "maximum length" in _plan(tiny, shorter, ["sentiment", "similarity"])
    assert "no int8 graph" in _plan(
        tiny,
        dataclasses.replace(previous, graphs={"fp32": "model.onnx"}),
        ["similarity"],
        ("fp32", "int8"),
    )


def test_a_failed_splice_is_built_in_full(tiny, tmp_path, monkeypatch) -> None:
    repository = tmp_path / "repository"
    tiny.publish(repository, "sentiment", variants=())

    def broken(*args, **kwargs):
        raise SpliceError("a test's broken splice")

    monkeypatch.setattr(merge, "splice_graphs", broken)
    published = tiny.publish(repository, "paraphrase", variants=())
    build = published.manifest.extra["graph_build"]
    assert build.startswith("graphs built in full (splicing into v")
    assert build.endswith("'s graphs failed: a test's broken splice)")
    assert float(published.manifest.extra["parity"]["fp32"]) <= FP32_TOLERANCE
