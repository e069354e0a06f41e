"""Offline items/s of every graph variant, fused and unfused, at batch 1 and 32.

    bert-mts-merge --out /tmp/fused ...
    bert-mts-merge --no-fuse ...
    python -m benchmarks.fusion_bench --store fused=/tmp/fused --store unfused=/tmp/unfused \\
        --data-dir ../shared/data

The 12-layer default (`base`, MPNet): `make model` builds it fused; a checkout from
before MPNet was fused (or `--no-fuse`) gives the unfused one. Its fp16 runs slowly on
a CPU, so name the variants to measure:

    python -m benchmarks.fusion_bench --store fused=models/default \\
        --store unfused=/path/to/unfused/models/default --variants fp32 \\
        --data-dir ../shared/data

No HTTP: ONNX Runtime on the CPU, tokenizing included, on the sentiment validation
texts (batches of 32 length-sorted, as the service's batcher forms them; batch 1 one
text at a time), for each variant each store holds. The stores are built beforehand,
so that only the measurement runs in the timed window.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import offline, validation_texts
from model_store.manifest import load_manifest
from model_store.repository import resolve_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="append", required=True, metavar="LABEL=DIR", help="repeatable"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-task", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="+", choices=("fp32", "int8", "fp16"), help="default: all a store has"
    )
    args = parser.parse_args()
    texts = validation_texts(args.data_dir, args.per_task)
    rows = []
    for item in args.store:
        label, directory = item.split("=", 1)
        store = resolve_store(Path(directory))
        for variant in load_manifest(store).graphs:
            if args.variants and variant not in args.variants:
                continue
            result = offline(store, texts, 32, variant, args.repeats)
            rows.append(
                (
                    variant,
                    label,
                    f"{result['batch1_items_per_s']:.0f}",
                    f"{result['batch1_p50_ms']:.2f}",
                    f"{result['items_per_s']:.0f}",
                )
            )
    rows.sort(key=lambda row: ("fp32", "int8", "fp16").index(row[0]))
    print(f"## Offline ONNX Runtime throughput, fused and unfused\n\n{provenance()}\n")
    headers = ["graph", "fusion", "batch 1 items/s", "batch 1 p50 ms", "batch 32 items/s"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
