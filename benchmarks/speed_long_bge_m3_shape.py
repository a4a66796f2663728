"""Speed at long inputs: the 50pct bge-m3 shape against the full shape at 512, 2,048 and 8,192 tokens, CPU.

bge-m3 serves up to 8,192 tokens. The longer the input, the larger attention's share of the work, and
attention prunes only with heads (16 -> 12 per layer in recipes/50pct.toml, with 20 of 24 layers), so
the speedup at long inputs is not the one at 128 tokens. This builds the 50pct export of
`builtin:bge-m3-random` (random weights, real shapes; gate scores from `bgeprune magnitude`) and its
ONNX graphs unless WORKDIR has them, then runs one `bgeprune bench` of the pruned model in PyTorch fp32
and ONNX int8 against the base in the same two backends, batch 1, and prints per length the measured
speedup on each backend beside the FLOPs ratio.

    python benchmarks/speed_long_bge_m3_shape.py [--workdir /tmp/bge-m3-long] [--lengths 512,2048,8192] [--repeats 3]

Needs about 12 GB of disk and 16 GB of memory; about 45 minutes on 2 CPU cores, most of it at 8,192
tokens. Keep the machine otherwise idle while it times.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import M3_BASE, SHOW, bgeprune, m3_shape_export

BACKEND_NAMES = {"torch": "PyTorch fp32", "onnx": "ONNX fp32", "onnx-int8": "ONNX int8"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bge-m3-long"))
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="torch,onnx-int8", help="bench backends for both models")
    args = parser.parse_args()
    run, out, report = args.workdir / "run", args.workdir / "bge-m3-50pct-shape", args.workdir / "bench"
    m3_shape_export(run, out)
    backends = args.backends.split(",")
    if any(b.startswith("onnx") for b in backends) and not (out / "onnx").is_dir():
        bgeprune("export-onnx", out, "--force")
    bgeprune("bench", out, "--backend", args.backends, "--compare", M3_BASE, "--compare-backend", args.backends,
             "--batch-sizes", args.batch, "--seq-lengths", args.lengths, "--warmup", args.warmup,
             "--repeats", args.repeats, "--no-memory", "--device", "cpu", "-o", report, "--force", stdout=SHOW)
    result = json.loads((report / "report.json").read_text())
    print(f"\n$ python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}".rstrip())
    print(f"bench command: {result['command']}")
    print(long_input_table(result["speed"]))


def long_input_table(points: list[dict]) -> str:
    """Markdown: per (batch, length), the pruned model's speedup over the base on each backend (both run
    on it), the FLOPs ratio, and the pruned model's median latency per backend."""
    entries = [k for k, v in points[0].items() if isinstance(v, dict) and "speedup_vs_base_same_backend" in v]
    names = {e: BACKEND_NAMES.get(e.partition("@")[2] or "torch", e) for e in entries}
    head = ["batch × tokens", *(f"speedup, {names[e]}" for e in entries), "FLOPs ratio",
            *(f"pruned p50 s, {names[e]}" for e in entries)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        cells = [f"{p['batch']} × {p['length']:,}",
                 *(f"{p[e]['speedup_vs_base_same_backend']:.2f}×" for e in entries), f"{p['flops_speedup']:.2f}×",
                 *(f"{p[e]['p50_ms'] / 1000:.2f}" for e in entries)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)

if __name__ == "__main__":
    main()
