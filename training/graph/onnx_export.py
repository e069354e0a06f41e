"""Export the merged model to ONNX, and derive its int8 (CPU) and fp16 (GPU) variants.

The fp32 graph is traced from `MergedModel` with dynamic batch and sequence axes and a
dynamic row count per task output; the
`task_mask` input is [batch, tasks] bool. int8 is ONNX Runtime's dynamic quantization
(`training.graph.int8`): smaller and faster on CPUs. fp16
converts weights and compute to half precision, keeping int64 inputs and fp32 outputs,
for GPUs; CPUs run it too, slowly, which is enough to check its numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from training.graph.fused_attention import CUSTOM_OPSETS
from training.graph.merged_model import INPUT_NAMES, MergedModel, output_name

OPSET = 17


def example_inputs(model: MergedModel, seq_len: int = 8) -> tuple[torch.Tensor, ...]:
    """A small batch for tracing: two single-task rows per task, then a row asking every
    task (the routing is traced as operators, so any membership works)."""
    tasks = len(model.task_names)
    rows = 2 * tasks + 1
    input_ids = torch.full((rows, seq_len), 1000, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1::2, seq_len // 2 :] = 0
    token_type_ids = torch.zeros_like(input_ids)
    task_mask = torch.zeros((rows, tasks), dtype=torch.bool)
    task_mask[torch.arange(2 * tasks), torch.arange(2 * tasks) % tasks] = True
    task_mask[-1] = True
    return input_ids, attention_mask, token_type_ids, task_mask


def export_fp32(model: MergedModel, path: Path, opset: int = OPSET) -> None:
    outputs = [output_name(task) for task in model.task_names]
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES[:3]}
    dynamic_axes["task_mask"] = {0: "batch"}
    dynamic_axes.update({name: {0: f"{name}_rows"} for name in outputs})
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export-based one.
        # That one traces the row routing too, but in our check its graph ran slower in
        # ONNX Runtime on CPU and took several times longer to export; revisit on upgrades.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example_inputs(model),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            # MPNet's attention nodes, when the export writes them (`fused_attention`).
            custom_opsets=CUSTOM_OPSETS if model.fused_attention else None,
        )
    keep_all_inputs(path)
    onnx.checker.check_model(str(path), full_check=True)


def keep_all_inputs(path: Path) -> None:
    """Put back graph inputs the exporter dropped because nothing reads them.

    An MPNet graph ignores token_type_ids (it has no segment embeddings), and the
    exporter then leaves that input out; every graph keeps the same four inputs instead,
    so whoever feeds a store (the service, any other ONNX Runtime client) does not need
    to know which encoder family is inside.
    """
    model = onnx.load(str(path))
    present = {value.name for value in model.graph.input}
    missing = [name for name in INPUT_NAMES[:3] if name not in present]
    if not missing:
        return
    for name in missing:
        position = INPUT_NAMES.index(name)
        model.graph.input.insert(
            position,
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, ["batch", "sequence"]),
        )
    onnx.save(model, str(path))


def convert_fp16(source: Path, target: Path, keep_io_types: bool | list[str] = True) -> None:
    """fp16 weights and compute; `keep_io_types` names the float inputs and outputs that
    stay fp32 (all of them by default; a spliced piece keeps only its task's output)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types)
    onnx.save(model, str(target))
    onnx.checker.check_model(str(target))
