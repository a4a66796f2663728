"""Quality ablation: which training lever raises a pruned student's retention, one lever at a time.

Every variant trains `recipes/minilm-50pct.toml` (all-MiniLM-L6-v2 to 49.8% of its encoder) with the
same data, batch and step budget plus its own `--set` overrides, then goes through finalize-masks →
prune → export-hf → verify, and `bgeprune bench` scores it against the teacher in one run:
nDCG@10 / MRR@10 on ../shared/data/pydocs (in-domain: the training text is pydocs_train.txt) and
bitext accuracy on ../shared/data/bitext_dev (held out: text the recipe never saw). The teacher's
outputs are cached (`--teacher-cache`), so only the first variant pays for the teacher's forward pass.

Results accumulate in OUT/results.json (a variant already there is not rerun unless --rerun names it);
the table is printed from all of them.

Run (about 15 minutes per variant on 2 CPU cores):
    python benchmarks/quality_ablation.py --out runs/ablation --variants baseline,tokens,importance
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from common import DATA, MINILM_RECIPE, MINILM_TEACHER, REPO, bgeprune, set_flags

# name -> (what it changes, --set overrides on top of the recipe). The variants measured before
# train.freeze_embeddings became the default train the table, as they did then.
TRAINED_TABLE = "train.freeze_embeddings=false"
VARIANTS = {
    "baseline": ("the recipe as it was (similarity KL + cosine)",
                 ["distill.tokens=0", "train.importance_init=0", TRAINED_TABLE]),
    "tokens": ("+ per-token cosine of the last hidden states",
               ["distill.tokens=1.0", "train.importance_init=0", TRAINED_TABLE]),
    "importance": ("+ gates initialised from magnitude importance",
                   ["distill.tokens=0", "train.importance_init=2.0", TRAINED_TABLE]),
    "layerwise": ("+ layer-wise MSE through a learned map (CoFi)",
                  ["distill.tokens=0", "train.importance_init=0", "distill.layerwise=1.0", TRAINED_TABLE]),
    "temperature": ("similarity KL at temperature 0.1 instead of 0.05",
                    ["distill.tokens=0", "train.importance_init=0", "distill.temperature=0.1", TRAINED_TABLE]),
    "recovery": ("500 pruning + 500 recovery steps instead of 700 + 300",
                 ["distill.tokens=0", "train.importance_init=0", "train.steps=500", "train.recovery_steps=500",
                  TRAINED_TABLE]),
    "tokens+importance": ("+ per-token cosine + importance init",
                          ["distill.tokens=1.0", "train.importance_init=2.0", TRAINED_TABLE]),
    "frozen-embeddings": ("importance + the word-embedding table frozen",
                          ["distill.tokens=0", "train.importance_init=2.0", "train.freeze_embeddings=true"]),
}


def train_and_export(name: str, out: Path, cache: Path, extra: list[str]) -> dict:
    run_dir = out / name
    sets = set_flags(VARIANTS[name][1] + extra)
    # The cache cannot hold per-layer states, so the layer-wise variant runs without it.
    cached = [] if any(s.startswith("distill.layerwise") and not s.endswith("=0") for s in VARIANTS[name][1]) \
        else ["--teacher-cache", str(cache)]
    start = time.perf_counter()
    bgeprune("train", MINILM_RECIPE, "--run-dir", run_dir, "--force", *sets, *cached)
    wall = time.perf_counter() - start
    bgeprune("finalize-masks", run_dir / "train", "--force")
    bgeprune("prune", run_dir / "masks", "--force")
    bgeprune("export-hf", run_dir, run_dir / "export", "--force")
    bgeprune("verify", run_dir / "export")
    bench = ["bench", str(run_dir / "export"), "--compare", MINILM_TEACHER, "--beir", str(DATA / "pydocs"),
             "--bitext", str(DATA / "bitext_dev"), "--no-speed", "--no-memory", "--device", "cpu",
             "-o", str(run_dir / "bench"), "--force"]
    bgeprune(*bench)
    report = json.loads((run_dir / "bench" / "report.json").read_text())
    info = json.loads((run_dir / "train" / "manifest.json").read_text())["info"]
    dense = report["quality"]["beir"]["pydocs"]["modes"]["dense"]
    bitext = report["quality"]["bitext_mean"]["dense"]
    return {"what": VARIANTS[name][0], "sets": VARIANTS[name][1] + extra,
            "bench_command": shlex.join(["bgeprune", *bench]),
            "ndcg@10": dense["model"]["ndcg@10"], "teacher_ndcg@10": dense["base"]["ndcg@10"],
            "ndcg_retention": dense["ratio"]["ndcg@10"], "mrr@10": dense["model"]["mrr@10"],
            "bitext": bitext["model"]["accuracy"], "teacher_bitext": bitext["base"]["accuracy"],
            "bitext_retention": bitext["ratio"]["accuracy"], "train_wall_s": round(wall, 1),
            "step_s": round(info["train_seconds"] / info["steps"], 3), "teacher_forwards": info["teacher_forwards"],
            "asymmetric": report["quality"]["beir"]["pydocs"].get("asymmetric")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablation")
    parser.add_argument("--variants", default="baseline,tokens,importance",
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--rerun", default="", help="variants to run again although results.json has them")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="an override applied to every variant (e.g. train.steps=2000)")
    args = parser.parse_args()
    command = shlex.join([sys.executable, *sys.argv])
    print("command:", command, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in [v for v in args.variants.split(",") if v]:
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        if name in results and name not in args.rerun.split(","):
            continue
        results[name] = {**train_and_export(name, args.out, args.out / "teacher-cache", args.extra), "command": command}
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    # "q x index": the pruned model's queries against the teacher's document vectors (index compatibility),
    # as a fraction of the teacher alone.
    print(f"\n{'variant':18} {'pydocs nDCG@10':>14} {'vs teacher':>10} {'bitext acc':>10} {'vs teacher':>10} "
          f"{'q x index':>9} {'step s':>7} {'train min':>9}")
    for name, r in results.items():
        compat = (r.get("asymmetric") or {}).get("model_queries_base_docs")
        print(f"{name:18} {r['ndcg@10']:14.4f} {r['ndcg_retention']:10.1%} {r['bitext']:10.4f} "
              f"{r['bitext_retention']:10.1%} {compat['ratio']['ndcg@10'] if compat else float('nan'):9.1%} "
              f"{r['step_s']:7.3f} {r['train_wall_s'] / 60:9.1f}")
    first = next(iter(results.values()), None)
    if first:
        print(f"teacher: pydocs nDCG@10 {first['teacher_ndcg@10']:.4f}, bitext accuracy {first['teacher_bitext']:.4f}")
    print(f"→ {results_path}")


if __name__ == "__main__":
    main()
