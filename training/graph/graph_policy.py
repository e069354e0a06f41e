"""Which graph a published version serves, decided once, at publish: a publish never
moves the answers of the tasks it did not change.

Every task of a version is answered by the one graph variant `--graph auto` serves, so
that choice is shared by all tasks. Left to be re-derived from each version's figures,
a publish of one task could flip it: the new task's int8 test fails, or an unchanged
branch re-measured on a CPU without VNNI loses more than it did where it was first
measured, and every other task's answers change with the graph (issue: republishing an
identical sentiment branch moved paraphrase from 0.8137 to 0.8304). So each publish
into a repository records the choice per provider (`model_store.graph_choice`,
`served_graphs`), and decides it like this:

- with no previous version, or no task left unchanged: the choice the new version's
  figures make (`measured_choice`);
- else, if the new figures choose what the previous version serves: that; if they
  choose what the previous version's figures chose (the verdict did not move, though
  an earlier `keep` serves another graph): what serves now, kept;
- else the publish is refused in one line naming what would change and why, unless
  the operator says `keep` (serve the previous choice: the changed task is served on
  it, with the loss its test shows) or `update` (serve the new choice: every task's
  answers change, once, on purpose).

A version whose new graphs could not be measured (the recorded validation data is not
found from here: another working directory, another machine) and would therefore be
served fp32 for want of figures, where the previous version served a faster graph, is
refused with the option that fixes it (`--data-dir`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from model_store.graph_choice import (
    RECORDED,
    GraphChoice,
    choose_graph,
    measured_choice,
    provider_key,
    recorded_metrics,
)
from model_store.manifest import Manifest
from training.errors import UsageError

CHOICES = ("keep", "update")  # what --graph-choice may say; unset: refuse a change


def decide_served_graphs(
    previous: Manifest | None,
    changed: Iterable[str],
    choice: str | None,
    tolerance_points: float,
) -> Callable[[Manifest], dict]:
    """The `served_graphs` record of the version a publish builds, as a function of its
    measured manifest; raises UsageError (one line) to refuse the publish."""
    if choice is not None and choice not in CHOICES:
        raise UsageError(f"--graph-choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    changed = set(changed)

    def decide(manifest: Manifest) -> dict:
        unchanged = [t.name for t in manifest.tasks if t.name not in changed]
        if previous is None or not unchanged:
            return _record(
                tolerance_points, lambda cuda: measured_choice(manifest, cuda, tolerance_points)
            )
        missing = recorded_metrics(manifest).get("unavailable")

        def kept_or_refused(cuda: bool) -> GraphChoice:
            served = choose_graph(previous, cuda, tolerance_points)  # recorded, or measured
            before = measured_choice(previous, cuda, tolerance_points)
            after = measured_choice(manifest, cuda, tolerance_points)
            if choice == "update" or after.variant == served.variant:
                return after  # the new figures choose what serves: their reason
            if after.variant == before.variant and served.variant in manifest.graphs:
                # The figures' verdict did not move: what serves stays, for its reason.
                return GraphChoice(served.variant, served.reason.removeprefix(RECORDED))
            if choice == "keep" and served.variant in manifest.graphs:
                return GraphChoice(
                    served.variant,
                    f"{served.variant} kept by --graph-choice keep (the new figures alone "
                    f"would serve {after.variant}: {after.reason})",
                )
            where = "CUDA" if cuda else "a CPU"
            if missing:
                raise UsageError(
                    f"cannot weigh the new version's graphs: {missing}; pass --data-dir DIR "
                    "(the folder holding the data files its tasks were trained on), else the "
                    f"graph served on {where} would switch from {served.variant} to fp32 for "
                    f"{', '.join(unchanged)} too"
                )
            raise UsageError(
                f"this publish would switch the graph served on {where} from "
                f"{served.variant} to {after.variant}, changing the answers of "
                f"{', '.join(unchanged)} too ({after.reason}); pass --graph-choice keep to "
                f"serve {served.variant} still (the changed task included), or "
                f"--graph-choice update to serve {after.variant} for every task"
            )

        return _record(tolerance_points, kept_or_refused)

    return decide


def _record(tolerance_points: float, decide: Callable[[bool], GraphChoice]) -> dict:
    """The record of `decide`'s choice for a CPU and for CUDA."""
    record = {}
    for cuda in (False, True):
        decided = decide(cuda)
        record[provider_key(cuda)] = {
            "variant": decided.variant,
            "reason": decided.reason,
            "tolerance_points": tolerance_points,
        }
    return record
