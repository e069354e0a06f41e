"""Rolling model update across two replicas behind HAProxy, under load: failed requests.

    python -m benchmarks.rolling_update_bench --model-dir models/default

Copies the model repository, stages a new sentiment branch version in it (a fresh head
on the same base: the version, not the accuracy, is what changes), and gives each of
two replicas its own copy, as each pod has the repository baked into its image. Both
serve the old version behind HAProxy (health checks on /ready) while clients post
/sentiment through it; then the new version reaches the replicas one at a time, by
`restart` (a Kubernetes rolling update: out of the load balancer, SIGTERM, start on
the new version, ready, back in) and by `reload` (POST /admin/reload per replica).
Prints the requests and failures of each, which replica served which version when,
and the steps of the rollout. Needs haproxy (Debian: apt-get install haproxy).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.rolling import Outcome, rolling_update, served_timeline
from model_store.manifest import load_manifest
from model_store.repository import is_repository, resolve_store
from model_store.tokenizer import PairTokenizer
from training.encoders.base_model import load_base_model
from training.fit.branch import save_branch
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.graph.publish import publish


def stage_new_sentiment_version(repository: Path, scratch: Path) -> str:
    """Publish a fresh sentiment branch into `repository` without activating it; return
    the new version's id."""
    manifest = load_manifest(resolve_store(repository), verify=False)
    base = load_base_model()
    tokenizer = PairTokenizer.from_dir(base.path, manifest.max_seq_len)
    layers = next(t.layers for t in manifest.tasks if t.name == "sentiment")
    torch.manual_seed(1234)
    model = TaskModel(base.encoder, preset_spec("sentiment"), layers, "cls")
    branch = save_branch(model, base, tokenizer, scratch, {}, {})
    return publish(repository, [branch], activate=False).version


def report(outcome: Outcome) -> str:
    failures = outcome.failures
    errors = sorted({f.error for f in failures})
    lines = [
        f"### {outcome.mode}: {len(outcome.records)} requests, {len(failures)} failed"
        + (f" ({', '.join(errors)})" if errors else ""),
        "",
        markdown_table(
            ["replica", "model version (sentiment branch)", "requests", "first s", "last s"],
            [
                (s, v, n, f"{a:.1f}", f"{b:.1f}")
                for s, v, n, a, b in served_timeline(outcome.records)
            ],
        ),
        "",
        markdown_table(
            ["s", "replica", "step"], [(f"{e.at:.1f}", e.replica, e.what) for e in outcome.events]
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--mode", choices=["restart", "reload", "both"], default="both")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load around")
    args = parser.parse_args()
    if not is_repository(args.model_dir):
        parser.error(f"{args.model_dir} is not a model repository (make model builds one)")

    modes = ["restart", "reload"] if args.mode == "both" else [args.mode]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "staging"
        shutil.copytree(args.model_dir, staging)
        old = resolve_store(staging).name
        new = stage_new_sentiment_version(staging, Path(tmp) / "branches")
        for mode in modes:
            workdir = Path(tmp) / mode
            workdir.mkdir()
            repositories = []
            for name in ("r1", "r2"):
                shutil.copytree(staging, workdir / name)
                repositories.append(workdir / name)
            outcomes.append(
                rolling_update(
                    repositories, new, mode, workdir, args.clients, args.max_requests, args.settle
                )
            )
    print(
        f"## Rolling update across 2 replicas behind HAProxy ({args.clients} clients, "
        f"/sentiment)\n\n{provenance()}\n\nrepository version {old} -> {new}\n"
    )
    print("\n\n".join(report(outcome) for outcome in outcomes))
    return 1 if any(outcome.failures for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
