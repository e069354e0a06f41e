"""The accuracy report's figures, one function per plot, each written as a PNG.

Every function takes plain arrays (validation labels and the served graph's raw
outputs), so the plots show what the shipped model does, not what training logged.
PNGs are written without a timestamp or software tag, so regenerating the report from
the same model and data gives byte-identical files.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt
import numpy as np

from training.report.depth_rule import SweepPoint

_PNG_METADATA = {"Software": None}
_DPI = 110


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI, metadata=_PNG_METADATA, bbox_inches="tight")
    plt.close(figure)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Row-normalised colours (recall per class), raw counts written in the cells."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(6.2, 5.2))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            colour = "white" if rates[row, column] > 0.5 else "black"
            axes.text(column, row, str(matrix[row, column]), ha="center", va="center", color=colour)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, [f"{i}\n{name}" for i, name in enumerate(class_names)], fontsize=7)
    axes.set_yticks(ticks, [f"{i} {name}" for i, name in enumerate(class_names)], fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Sentiment: confusion matrix (colour = share of the true class)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    _save(figure, path)


def plot_residuals(gold: np.ndarray, predicted: np.ndarray, path: Path) -> None:
    """Predicted vs gold score, and the residual against the gold score."""
    residual = predicted - gold
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.scatter(gold, predicted, s=6, alpha=0.5)
    left.plot([0, 5], [0, 5], color="black", linewidth=1)
    left.set_xlabel("gold similarity")
    left.set_ylabel("predicted similarity")
    left.set_title("Similarity: predicted vs gold")
    right.scatter(gold, residual, s=6, alpha=0.5)
    right.axhline(0, color="black", linewidth=1)
    bins = np.linspace(0, 5, 11)
    centres, means = [], []
    for low, high in itertools.pairwise(bins):
        inside = (gold >= low) & (gold < high if high < 5 else gold <= high)
        if inside.any():
            centres.append((low + high) / 2)
            means.append(residual[inside].mean())
    right.plot(centres, means, color="tab:red", marker="o", label="mean residual per bin")
    right.set_xlabel("gold similarity")
    right.set_ylabel("predicted - gold")
    right.set_title(f"Residuals (RMSE {np.sqrt(np.mean(residual**2)):.3f})")
    right.legend(loc="upper right")
    _save(figure, path)


def calibration_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per equal-width bin: mean predicted probability, observed positive rate, count;
    and the expected calibration error (count-weighted mean |gap|)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    filled = counts > 0
    mean_p = np.bincount(which, weights=probabilities, minlength=bins)[filled] / counts[filled]
    observed = np.bincount(which, weights=labels, minlength=bins)[filled] / counts[filled]
    ece = float(np.sum(counts[filled] * np.abs(mean_p - observed)) / counts.sum())
    return mean_p, observed, counts[filled], ece


def plot_calibration(probabilities: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Reliability diagram: a calibrated model's points lie on the diagonal."""
    mean_p, observed, counts, ece = calibration_bins(probabilities, labels)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.plot([0, 1], [0, 1], color="black", linewidth=1, label="perfect calibration")
    left.plot(mean_p, observed, marker="o", label="model")
    left.set_xlabel("predicted probability of paraphrase")
    left.set_ylabel("observed share of paraphrases")
    left.set_title(f"Paraphrase: calibration (ECE {ece:.3f})")
    left.legend(loc="upper left")
    right.hist(probabilities, bins=20, range=(0, 1))
    right.set_xlabel("predicted probability of paraphrase")
    right.set_ylabel("pairs")
    right.set_title(f"Predicted probabilities ({int(counts.sum())} pairs)")
    _save(figure, path)


def plot_k_sweep(
    points: Sequence[SweepPoint],
    full: dict[str, float],
    shipped: dict[str, tuple[int, float]],
    path: Path,
) -> None:
    """Validation metric against branch depth K per task (one recipe for every K): top-K
    tuning alone, and distilled from a teacher (mean over seeds, bars spanning them);
    full fine-tuning as a dashed line, the shipped branch (its own recipe) as a star."""
    tasks = sorted({point.task for point in points} | set(full) | set(shipped))
    figure, axes_list = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for axes, task in zip(axes_list[0], tasks, strict=True):
        for distilled, label in ((False, "top-K tuned"), (True, "top-K, distilled")):
            series = [p for p in points if p.task == task and p.distilled == distilled]
            if series:
                axes.errorbar(
                    [p.layers for p in series],
                    [p.mean for p in series],
                    yerr=[[p.mean - p.low for p in series], [p.high - p.mean for p in series]],
                    marker="s" if distilled else "o",
                    linestyle="--" if distilled else "-",
                    capsize=3,
                    label=label,
                )
        if task in full:
            axes.axhline(full[task], linestyle=":", color="tab:green", label="full fine-tuning")
        if task in shipped:
            layers, value = shipped[task]
            axes.plot(
                [layers], [value], marker="*", markersize=14, color="tab:red", linestyle="none"
            )
            axes.annotate("shipped", (layers, value), textcoords="offset points", xytext=(6, -12))
        axes.set_title(task)
        axes.set_xlabel("K (tuned top layers)")
        axes.set_ylabel("validation metric")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    _save(figure, path)


def plot_trade_off(
    points: Sequence[SweepPoint],
    full: dict[str, float],
    num_layers: int,
    shipped: dict[str, int],
    keep: float,
    path: Path,
) -> None:
    """What sharing costs: each task's metric, as a share of its full fine-tuning, against
    the frozen layers it shares (L - K); the rule's threshold dashed, the shipped depth
    starred."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for task in sorted(full):
        for distilled in (False, True):
            series = [p for p in points if p.task == task and p.distilled == distilled]
            if not series:
                continue
            axes.plot(
                [num_layers - p.layers for p in series],
                [100 * p.mean / full[task] for p in series],
                marker="s" if distilled else "o",
                linestyle="--" if distilled else "-",
                label=f"{task}{', distilled' if distilled else ''}",
            )
        if task in shipped:
            best = [p for p in points if p.task == task and p.layers == shipped[task]]
            if best:
                value = max(p.mean for p in best)
                axes.plot(
                    [num_layers - shipped[task]],
                    [100 * value / full[task]],
                    marker="*",
                    markersize=14,
                    color="tab:red",
                    linestyle="none",
                )
    axes.axhline(100 * keep, color="black", linestyle=":", label=f"{keep:.0%} of full FT")
    axes.set_xlabel("frozen layers shared (L - K)")
    axes.set_ylabel("validation metric, % of full fine-tuning")
    axes.set_title("Sharing more layers against keeping accuracy (stars: shipped depth)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="lower left")
    _save(figure, path)
