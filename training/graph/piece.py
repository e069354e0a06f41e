"""One task's piece of the merged graph, exported on its own for splicing.

A publish that changes one task needs only that task's part of the tree
(`training.graph.splice`): its K tuned layers and head, fed by the hidden state at its
fork depth f on the frozen path. When no other task forks at f yet, the frozen path
must also start narrowing there (the rows that need the next fork's layers, as
`MergedModel` does at every fork), so the piece then also carries the frozen layers
[f, next fork) on those rows, and hands their hidden state and row tensors on to
whatever the graph runs from the next fork.

The piece's inputs are the row tensors the frozen path carries at f: hidden
[rows, seq, H], attention_mask [rows, seq], asks [rows, tasks] (bool: the tasks each
row asks) and need [rows] (the deepest fork among a row's tasks). Its modules and
operators are exactly the merged model's (`TaskBranch`, `run_layers`, `select_rows`),
so the fused piece is node for node the corresponding part of a full export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from training.encoders.bert import run_layers
from training.graph.merged_model import MergedModel, TaskBranch, output_name, select_rows
from training.graph.onnx_export import OPSET

PIECE_INPUTS = ("hidden", "attention_mask", "asks", "need")
# What an inserted fork hands on to the graph's next fork (the narrowed rows).
PIECE_HANDOVER = ("hidden_out", "attention_mask_out", "asks_out", "need_out")


class TaskPiece(nn.Module):
    """A task's branch at its fork, and the frozen layers [fork, next_fork) when the
    fork is new to the graph (`next_fork`); eval-only, BERT (no position bias)."""

    def __init__(self, merged: MergedModel, task: str, next_fork: int | None) -> None:
        super().__init__()
        self.task = task
        self.index = merged.task_names.index(task)
        self.fork = merged.fork_depths[self.index]
        self.next_fork = next_fork
        self.branch: TaskBranch = merged.branches[task]
        # Named by depth, so that their nodes are named as in a full export.
        layers = range(self.fork, next_fork) if next_fork is not None else ()
        self.frozen = nn.ModuleDict({str(d): merged.frozen[d] for d in layers})
        self.hidden_size = merged.embeddings.word_embeddings.embedding_dim
        self.num_tasks = len(merged.task_names)
        self.eval()

    @property
    def output_names(self) -> list[str]:
        return [output_name(self.task), *(PIECE_HANDOVER if self.next_fork is not None else ())]

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        asks: torch.Tensor,
        need: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        mine = asks[:, self.index]
        logits = self.branch(select_rows(hidden, mine), select_rows(attention_mask, mine))
        if self.next_fork is None:
            return (logits,)
        keep = need >= self.next_fork
        rows = [select_rows(part, keep) for part in (hidden, attention_mask, asks, need)]
        rows[0] = run_layers(list(self.frozen.values()), rows[0], rows[1])
        return (logits, *rows)

    def example_inputs(self, seq_len: int = 8) -> tuple[torch.Tensor, ...]:
        rows = 6
        hidden = torch.randn(rows, seq_len, self.hidden_size)
        attention_mask = torch.ones((rows, seq_len), dtype=torch.long)
        attention_mask[1::2, seq_len // 2 :] = 0
        asks = torch.zeros((rows, self.num_tasks), dtype=torch.bool)
        asks[::2, self.index] = True
        need = torch.full((rows,), self.fork, dtype=torch.long)
        if self.next_fork is not None:
            need[1::2] = self.next_fork
        return hidden, attention_mask, asks, need


def export_piece(piece: TaskPiece, path: Path) -> None:
    """The piece's fp32 graph at `path`, with dynamic row and sequence axes."""
    axes = {"hidden": {0: "rows", 1: "sequence"}, "attention_mask": {0: "rows", 1: "sequence"}}
    axes.update({"asks": {0: "rows"}, "need": {0: "rows"}})
    axes.update({name: {0: f"{name}_rows"} for name in piece.output_names})
    axes["hidden_out"] = axes["attention_mask_out"] = {0: "out_rows", 1: "sequence"}
    axes["asks_out"] = axes["need_out"] = {0: "out_rows"}
    axes = {k: v for k, v in axes.items() if k in (*PIECE_INPUTS, *piece.output_names)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # as in onnx_export.export_fp32
        torch.onnx.export(
            piece,
            piece.example_inputs(),
            str(path),
            input_names=list(PIECE_INPUTS),
            output_names=piece.output_names,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
