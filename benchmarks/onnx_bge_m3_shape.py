"""ONNX at full bge-m3 shape (random weights): the 50pct export to fp32 + int8 ONNX, verify, and bench.

Builds the 50pct export from `builtin:bge-m3-random` with recipes/50pct.toml (gate scores from
`bgeprune magnitude`: the shape matters here, not which units are kept) unless WORKDIR has it, then
  1. `bgeprune export-onnx` with its wall time and peak RSS (the process tree, sampled every 50 ms)
     against the fp32 model.safetensors size (goal: under 3x),
  2. `bgeprune verify` (fp32 graph vs PyTorch, int8 agreement),
  3. `bgeprune bench` of the pruned int8 graph (and the pruned model in PyTorch) against the unpruned
     base in PyTorch fp32 and in ONNX int8 (traced at bench time), at batch 32 x 128 on the CPU.

    python benchmarks/onnx_bge_m3_shape.py [--workdir /tmp/bge-m3-onnx] [--repeats 6]

Needs about 12 GB of disk and 10 GB of memory; about 20 minutes on 2 cores. Keep the machine idle.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import CLI, M3_BASE, SHOW, bgeprune, m3_shape_export, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bge-m3-onnx"))
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    run, out, report = args.workdir / "run", args.workdir / "export-50pct", args.workdir / "bench"
    m3_shape_export(run, out)
    size = (out / "model.safetensors").stat().st_size
    export_s, export_peak = measure([*CLI, "export-onnx", str(out), "--force"])
    onnx_dir = out / "onnx"
    sizes = {p.name: p.stat().st_size for p in sorted(onnx_dir.iterdir())}
    verify_s, verify_peak = measure([*CLI, "verify", str(out), "--json"])
    bgeprune("bench", out, "--backend", "onnx-int8,torch", "--compare", M3_BASE, "--compare-backend",
             "torch,onnx-int8", "--batch-sizes", "32", "--seq-lengths", "128", "--warmup", "2", "--repeats",
             args.repeats, "--device", "cpu", "-o", report, "--force", stdout=SHOW)
    result = json.loads((report / "report.json").read_text())

    print(f"\n$ python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}".rstrip())
    print(f"fp32 model.safetensors {size / 2**30:.2f} GiB; onnx/: " +
          ", ".join(f"{name} {b / 2**20:,.0f} MiB" for name, b in sizes.items()))
    print(f"export-onnx  {export_s:7.1f} s  peak RSS {export_peak / 2**30:.2f} GiB = {export_peak / size:.2f}x the "
          f"fp32 weights (goal < 3x)")
    print(f"verify       {verify_s:7.1f} s  peak RSS {verify_peak / 2**30:.2f} GiB (exit 0: every check passed)")
    print(f"bench command: {result['command']}")
    print(f"{'entry':<34}{'sentences/s':>12}{'x base torch':>14}{'x base same backend':>21}{'p50 ms':>10}"
          f"{'peak MB':>9}")
    for row in result["headline"]["entries"].values():
        same = row.get("speedup_vs_base_same_backend")
        rss = row.get("model_rss_bytes")
        print(f"{row['label']:<34}{row['sentences_per_s']:>12.2f}{row.get('speedup_vs_base', 1.0):>13.2f}x"
              f"{'' if same is None else f'{same:.2f}x':>21}{row['p50_ms']:>10.0f}"
              f"{'' if rss is None else f'{rss / 1e6:,.0f}':>9}")


if __name__ == "__main__":
    main()
