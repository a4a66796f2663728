"""Quality benchmark: all-MiniLM-L6-v2 pruned to ~50% of its encoder by `bgeprune train`, against the
unpruned teacher and against the naive baseline (drop every other layer, distil for the same steps).

Both students train on ../shared/data/pydocs_train.txt with the same batch size and number of
steps, then go through finalize-masks → prune → export-hf → verify. Each export is then compared with
the teacher by `bgeprune bench` in one run: nDCG@10, MRR@10, Recall@100 on ../shared/data/pydocs
(BEIR format, max_seq_length 256, sentence-transformers' IR metric code) and speed at batch 32 × 128
on CPU. Reports go to OUT/bench-l0 and OUT/bench-naive, a summary to OUT/results.json.

Run (about 35 minutes on 2 CPU cores; --train none re-benchmarks existing exports):
    python benchmarks/quality_minilm.py --out runs/bench-minilm
    python benchmarks/quality_minilm.py --out runs/minilm-matryoshka --train l0 --dims 192,96 \
        --set 'distill.matryoshka_dims=[384,192,96]'
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from common import DATA, MINILM_RECIPE, MINILM_TEACHER, REPO, SHOW, bgeprune, set_flags

PYDOCS = DATA / "pydocs"


def pipeline(run: Path) -> Path:
    bgeprune("finalize-masks", run / "train", "--force")
    bgeprune("prune", run / "masks", "--force")
    bgeprune("export-hf", run, run / "export", "--force")
    bgeprune("verify", run / "export")
    return run / "export"


def train_l0(out: Path, sets: list[str]) -> float:
    start = time.perf_counter()
    bgeprune("train", MINILM_RECIPE, "--run-dir", out, "--force", *set_flags(sets))
    return time.perf_counter() - start


def train_naive(out: Path, sets: list[str], steps: int) -> float:
    """Every other layer kept (0, 2, 4): half the encoder; only the recovery phase, same step count."""
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import recipe_base_dims
    from bgeprune_cli.stages import train

    naive_sets = sets + ["target.layers=3", "target.ffn=1536", "train.steps=1", f"train.recovery_steps={steps}"]
    recipe = load_recipe(MINILM_RECIPE, naive_sets, base_dims=recipe_base_dims)
    print(f"$ (python) stages.train.run({MINILM_RECIPE.name}, fixed_masks=layers 0,2,4; --set {' '.join(naive_sets)})",
          flush=True)
    start = time.perf_counter()
    train.run(recipe, run_dir=out, force=True, fixed_masks={"layer": torch.tensor([True, False] * 3)})
    return time.perf_counter() - start


def bench(export: Path, report: Path, dims: str | None = None) -> dict:
    """`bgeprune bench` of an export against the teacher: quality on pydocs and speed, in one run."""
    bgeprune("bench", export, "--compare", MINILM_TEACHER, "--beir", PYDOCS, "--batch-sizes", "32", "--seq-lengths",
             "128", "--device", "cpu", "-o", report, "--force", *(["--dims", dims] if dims else []), stdout=SHOW)
    return json.loads((report / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-minilm")
    parser.add_argument("--steps", type=int, default=700, help="pruning-phase steps of the L0 run")
    parser.add_argument("--recovery-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train", default="l0,naive", help="which students to (re)train: l0, naive, both "
                        "(default) or none (re-evaluate existing exports)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="one more recipe override for both students (e.g. 'distill.matryoshka_dims=[384,192,96]')")
    parser.add_argument("--dims", help="bench quality also at these output widths (bench --dims), e.g. 192,96")
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    sets = [f"train.steps={args.steps}", f"train.recovery_steps={args.recovery_steps}",
            f"train.batch_size={args.batch_size}", *args.extra]
    seconds = {}
    which = set(args.train.split(",")) - {"none"}
    if "l0" in which:
        seconds["l0"] = train_l0(args.out / "l0", sets)
        pipeline(args.out / "l0")
    if "naive" in which:
        seconds["naive"] = train_naive(args.out / "naive", sets, args.steps + args.recovery_steps)
        pipeline(args.out / "naive")
    for name in ("l0", "naive"):  # the run's own record of its training time (steps only, no loading)
        manifest = args.out / name / "train" / "manifest.json"
        if manifest.is_file():
            seconds[f"{name}_steps_only"] = json.loads(manifest.read_text())["info"]["train_seconds"]
    results = {}
    for name, label in (("l0", "bgeprune train (L0, 50%)"), ("naive", "naive: every other layer (50%)")):
        export = args.out / name / "export"
        if (export / "manifest.json").is_file():
            results[label] = bench(export, args.out / f"bench-{name}", args.dims)
    if not results:
        sys.exit(f"no exports under {args.out}; train first (--train l0,naive)")
    print(f"\n{'model':34} {'nDCG@10':>8} {'vs teacher':>10} {'MRR@10':>7} {'R@100':>6} "
          f"{'speedup':>8} {'efficiency':>10}")
    for label, report in results.items():
        dense = report["quality"]["beir"]["pydocs"]["modes"]["dense"]
        h = report["headline"]
        if label == next(iter(results)):
            t = dense["base"]
            print(f"{'teacher (all-MiniLM-L6-v2)':34} {t['ndcg@10']:8.4f} {1:10.1%} {t['mrr@10']:7.4f} "
                  f"{t['recall@100']:6.3f} {1:8.2f} {'':>10}")
        m = dense["model"]
        print(f"{label:34} {m['ndcg@10']:8.4f} {dense['ratio']['ndcg@10']:10.1%} {m['mrr@10']:7.4f} "
              f"{m['recall@100']:6.3f} {h['speedup']:8.2f} {h['speedup_efficiency']:10.2f}")
    report = {"command": shlex.join([sys.executable, *sys.argv]), "sets": sets, "train_seconds": seconds,
              "bench": {label: r["artifact"] for label, r in results.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntrain seconds: {seconds}\n→ {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
