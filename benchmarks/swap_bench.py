"""Hot updates under load: requests sent and failed across three swaps.

    python -m benchmarks.swap_bench --branch runs/branches/sentiment \\
        --branch runs/branches/paraphrase --branch runs/branches/similarity

Builds a model repository from the given branches in a temporary directory, serves it
(admin token set), and drives a mixed three-task load with wrk while three updates go
live: a new sentiment branch, a new paraphrase branch, then a rollback to the first
version. Each update is published while the load runs, then loaded with POST
/admin/reload. Untouched tasks are probed before and after each swap.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, request_lines, run_wrk, validation_texts
from model_store.repository import list_versions, set_current
from model_store.tokenizer import PairTokenizer
from service.client import Client
from training.encoders.base_model import load_base_model
from training.fit.branch import save_branch
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.graph.publish import publish

TOKEN = "bench-token"
PROBES = {
    "sentiment": {"text": "a quiet and moving film"},
    "paraphrase": {
        "sentence1": "How do I cook rice?",
        "sentence2": "What is the way to cook rice?",
    },
    "similarity": {"sentence1": "A man plays guitar.", "sentence2": "A man is playing music."},
}


def fresh_branch(base, tokenizer, task: str, seed: int, out: Path) -> Path:
    """A new version of a task's branch (a freshly initialised head is enough to swap)."""
    torch.manual_seed(seed)
    return save_branch(
        TaskModel(base.encoder, preset_spec(task), 2, "cls"), base, tokenizer, out, {}, {}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", action="append", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    base = load_base_model()
    tokenizer = PairTokenizer.from_dir(base.path, 128)
    texts = validation_texts(args.data_dir, 200)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        publish(repo, args.branch, create=True)
        first = list_versions(repo)[0].version
        server = Server(repo, {"BERT_MTS_ADMIN_TOKEN": TOKEN})
        client = Client(server.url, timeout=120)
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def probe() -> dict:
            return {t: client._http.post(f"/{t}", json=b).json() for t, b in PROBES.items()}

        load: dict = {}
        duration = 120
        thread = threading.Thread(
            target=lambda: load.update(
                run_wrk(
                    server.url,
                    request_lines(texts, "mixed"),
                    args.connections,
                    duration,
                    Path(tmp),
                    server.process.pid,
                )
            )
        )
        rows = []
        try:
            thread.start()
            time.sleep(5)
            initial = probe()
            steps = [
                ("new sentiment branch", "sentiment"),
                ("new paraphrase branch", "paraphrase"),
                ("rollback to the first version", None),
            ]
            for step, (label, task) in enumerate(steps):
                before = probe()
                started = time.perf_counter()
                if task:
                    branch = fresh_branch(base, tokenizer, task, 100 + step, Path(tmp) / "new")
                    publish(repo, [branch])
                else:
                    set_current(repo, first)
                reply = client._http.post("/admin/reload", headers=headers)
                seconds = time.perf_counter() - started
                after = probe()
                if task is None:  # a rollback: every task answers as in the first version
                    compared, same = "all, vs the first version", after == initial
                else:
                    untouched = [t for t in PROBES if t != task]
                    compared = ", ".join(untouched)
                    same = all(after[t] == before[t] for t in untouched)
                result = reply.json().get("result")
                rows.append((label, reply.status_code, result, f"{seconds:.1f}", compared, same))
            thread.join()
        finally:
            server.stop()
    print(
        f"## Hot updates under load (wrk, {args.connections} connections, mixed, "
        f"{duration} s)\n\n{provenance()}\n"
    )
    print(
        markdown_table(
            [
                "update",
                "reload status",
                "result",
                "publish + reload s",
                "answers compared",
                "identical",
            ],
            rows,
        )
    )
    failed = load["status_errors"] + load["other_errors"]
    print(f"\nrequests sent during the run: {load['requests']}; failed: {failed}")


if __name__ == "__main__":
    main()
