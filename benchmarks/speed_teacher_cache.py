"""Training speed with and without the teacher cache: the MiniLM recipe for a fixed number of steps.

Three runs of `bgeprune train recipes/minilm-50pct.toml` with the same seed, so they see the same
texts: without a cache, with an empty cache (it is filled as the run goes), and again with the
filled cache (a repeated run or a later epoch: no teacher forward at all). Steps/s is taken from the
run's own step time (`train_seconds`: model loading excluded); ratios are against the no-cache run
of the same invocation. The rows run one after another, so keep the machine otherwise idle.

Run (about 5 minutes on 2 CPU cores):
    python benchmarks/speed_teacher_cache.py --steps 60 --out runs/bench-teacher-cache
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from common import CAPTURE, MINILM_RECIPE, bgeprune, set_flags


def train(run_dir: Path, steps: int, cache: Path | None) -> dict:
    sets = [f"train.steps={steps}", "train.recovery_steps=0", f"train.checkpoint_every={steps}", "train.log_every=10"]
    cached = [] if cache is None else ["--teacher-cache", cache]
    result = bgeprune("train", MINILM_RECIPE, "--run-dir", run_dir, "--force", "--device", "cpu", "--json",
                      *set_flags(sets), *cached, stdout=CAPTURE, stderr=CAPTURE)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-teacher-cache"))
    args = parser.parse_args()
    cache = args.out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows = {"no cache": train(args.out / "none", args.steps, None),
            "cache, empty (filling)": train(args.out / "cold", args.steps, cache),
            "cache, filled": train(args.out / "warm", args.steps, cache)}
    base = args.steps / rows["no cache"]["train_seconds"]
    results = []
    print(f"\nMiniLM recipe, {args.steps} steps, batch 16 x max 128 tokens, CPU, {torch.get_num_threads()} threads")
    print(f"{'':24} {'steps/s':>8} {'vs no cache':>12} {'teacher forwards':>17}")
    for name, r in rows.items():
        rate = args.steps / r["train_seconds"]
        results.append({"run": name, "steps_per_s": rate, "ratio": rate / base,
                        "teacher_forwards": r["teacher_forwards"], "cache": r.get("teacher_cache")})
        print(f"{name:24} {rate:8.3f} {rate / base:11.2f}x {r['teacher_forwards']:17d}")
    losses = [[json.loads(line)["loss"] for line in (args.out / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("cold", "warm")]
    print(f"filled-cache losses identical to the filling run's: {losses[0] == losses[1]}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
