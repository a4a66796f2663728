"""Speed of a 50pct-shaped bge-m3 against the full bge-m3 shape (random weights, real shapes), on this machine.

Builds the 50pct export from `builtin:bge-m3-random` with recipes/50pct.toml (gate scores from
`bgeprune magnitude`: the shape is what matters for speed, not which units are kept), then runs
`bgeprune bench` on it against the full shape at batch 32 × 128 tokens and prints the headline:
measured speedup, FLOPs speedup and the speedup efficiency (goal >= 0.85).

    python benchmarks/speed_bge_m3_shape.py [--workdir /tmp/bge-m3-speed] [--repeats 8]

Needs about 10 GB of disk (random base in $BGEPRUNE_CACHE, run, export) and ~8 GB of RAM; it takes
about 15 minutes on 2 CPU cores. Keep the machine otherwise idle while it times.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import M3_BASE, SHOW, bgeprune, m3_shape_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bge-m3-speed"))
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch-sizes", default="32")
    parser.add_argument("--seq-lengths", default="128")
    args = parser.parse_args()
    run, out, report = args.workdir / "run", args.workdir / "bge-m3-50pct-shape", args.workdir / "bench"
    m3_shape_export(run, out)
    bgeprune("bench", out, "--compare", M3_BASE, "--batch-sizes", args.batch_sizes, "--seq-lengths",
             args.seq_lengths, "--repeats", args.repeats, "--device", "cpu", "-o", report, "--force", stdout=SHOW)
    result = json.loads((report / "report.json").read_text())
    h = result["headline"]
    print(f"\n$ python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}".rstrip())
    print(f"bench command: {result['command']}")
    print(f"batch {h['batch']} x {h['length']}: speedup {h['speedup']:.2f}x, FLOPs speedup {h['flops_speedup']:.2f}x, "
          f"speedup efficiency {h['speedup_efficiency']:.2f} (goal >= 0.85) -> {report / 'report.json'}")


if __name__ == "__main__":
    main()
