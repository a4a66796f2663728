"""Full bge-m3 shape, random weights: finalize-masks -> prune -> export-hf -> verify on recipes/50pct.toml.

Prints each stage's wall time and peak RSS (the stage's whole process tree, sampled every 50 ms)
next to the fp32 model size. The gate scores come from `bgeprune magnitude` (timed separately).

    python benchmarks/pipeline_bge_m3_shape.py [--workdir /tmp/bge-m3-shape]

Needs about 10 GB of disk for the random base (cached in $BGEPRUNE_CACHE), the run and the export.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import CLI, M3_BASE, M3_RECIPE, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bge-m3-shape"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    run, out = args.workdir / "run", args.workdir / "out"

    start = time.perf_counter()
    from bgeprune_cli.models.builtins import materialize

    base_dir = materialize(M3_BASE.removeprefix("builtin:"))
    model_bytes = (base_dir / "model.safetensors").stat().st_size
    print(f"base {M3_BASE}: {model_bytes / 2**30:.2f} GiB fp32 at {base_dir} ({time.perf_counter() - start:.0f}s)")

    stages = [
        ("magnitude (gate scores)",
         ["magnitude", str(M3_RECIPE), "--set", f"base.model={M3_BASE}", "--run-dir", str(run)]),
        ("finalize-masks", ["finalize-masks", str(run / "train")]),
        ("prune", ["prune", str(run / "masks")]),
        ("export-hf", ["export-hf", str(run), str(out)]),
        ("verify", ["verify", str(out)]),
    ]
    rows = []
    for name, command in stages:
        wall, peak = measure(CLI + command)
        rows.append((name, wall, peak))
    print(f"\n$ python benchmarks/{Path(__file__).name}")
    print(f"{'stage':<26}{'wall s':>9}{'peak RSS GiB':>15}{'x fp32 model':>14}")
    for name, wall, peak in rows:
        print(f"{name:<26}{wall:>9.1f}{peak / 2**30:>15.2f}{peak / model_bytes:>14.2f}")
    chain = rows[1:]
    print(f"{'finalize->verify total':<26}{sum(r[1] for r in chain):>9.1f}{max(r[2] for r in chain) / 2**30:>15.2f}"
          f"{max(r[2] for r in chain) / model_bytes:>14.2f}")


if __name__ == "__main__":
    main()
