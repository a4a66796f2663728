"""Quality benchmark: all-MiniLM-L6-v2 pruned to ~50% of its encoder by `bgeprune train`, against the
unpruned teacher and against the naive baseline (drop every other layer, distil for the same steps).

Both students train on ../shared/data/pydocs_train.txt with the same batch size and number of
steps, then go through finalize-masks → prune → export-hf; all three models are scored with
sentence-transformers' InformationRetrievalEvaluator on ../shared/data/pydocs (BEIR format,
max_seq_length 256): nDCG@10, MRR@10, Recall@100. Results go to OUT/results.json.

Run (about 35 minutes on 2 CPU cores):
    python benchmarks/minilm_quality.py --out runs/bench-minilm
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "minilm-50pct.toml"
PYDOCS = REPO.parent / "shared" / "data" / "pydocs"


def cli(*args: str) -> None:
    command = ["bgeprune", *args]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def pipeline(run: Path) -> Path:
    cli("finalize-masks", str(run / "train"), "--force")
    cli("prune", str(run / "masks"), "--force")
    cli("export-hf", str(run), str(run / "export"), "--force")
    cli("verify", str(run / "export"))
    return run / "export"


def train_l0(out: Path, sets: list[str]) -> float:
    start = time.perf_counter()
    cli("train", str(RECIPE), "--run-dir", str(out), "--force", *[a for s in sets for a in ("--set", s)])
    return time.perf_counter() - start


def train_naive(out: Path, sets: list[str], steps: int) -> float:
    """Every other layer kept (0, 2, 4): half the encoder; only the recovery phase, same step count."""
    from bgeprune_cli.base import recipe_base_dims
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.stages import train

    naive_sets = sets + ["target.layers=3", "target.ffn=1536", "train.steps=1", f"train.recovery_steps={steps}"]
    recipe = load_recipe(RECIPE, naive_sets, base_dims=recipe_base_dims)
    print(f"$ (python) stages.train.run({RECIPE.name}, fixed_masks=layers 0,2,4; --set {' '.join(naive_sets)})",
          flush=True)
    start = time.perf_counter()
    train.run(recipe, out, force=True, fixed_masks={"layer": torch.tensor([True, False] * 3)})
    return time.perf_counter() - start


def load_beir(root: Path):
    read = lambda name: [json.loads(line) for line in (root / name).read_text().splitlines() if line.strip()]
    queries = {q["_id"]: q["text"] for q in read("queries.jsonl")}
    corpus = {d["_id"]: (d.get("title", "") + " " + d["text"]).strip() for d in read("corpus.jsonl")}
    relevant: dict[str, set[str]] = {}
    for line in (root / "qrels.tsv").read_text().splitlines()[1:]:
        qid, cid, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(qid, set()).add(cid)
    return queries, corpus, relevant


def evaluate(model_dir: Path, beir) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 256
    queries, corpus, relevant = beir
    evaluator = InformationRetrievalEvaluator(queries, corpus, relevant, ndcg_at_k=[10], mrr_at_k=[10],
                                              precision_recall_at_k=[100], accuracy_at_k=[1], map_at_k=[10],
                                              name="pydocs", write_csv=False, score_functions=None)
    scores = evaluator(model)
    pick = lambda metric: next(v for k, v in scores.items() if k.endswith(metric) and "cosine" in k)
    return {"ndcg@10": pick("ndcg@10"), "mrr@10": pick("mrr@10"), "recall@100": pick("recall@100")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-minilm")
    parser.add_argument("--steps", type=int, default=700, help="pruning-phase steps of the L0 run")
    parser.add_argument("--recovery-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train", default="l0,naive", help="which students to (re)train: l0, naive, both "
                        "(default) or none (re-evaluate existing exports)")
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    from bgeprune_cli.base import resolve_base

    sets = [f"train.steps={args.steps}", f"train.recovery_steps={args.recovery_steps}",
            f"train.batch_size={args.batch_size}"]
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
    beir = load_beir(PYDOCS)
    models = {"teacher (all-MiniLM-L6-v2)": resolve_base("builtin:all-minilm-l6-v2"),
              "bgeprune train (L0, 50%)": args.out / "l0" / "export",
              "naive: every other layer (50%)": args.out / "naive" / "export"}
    results = {name: evaluate(path, beir) for name, path in models.items()}
    for name, path in models.items():
        manifest = path / "manifest.json"
        if manifest.is_file():
            info = json.loads(manifest.read_text())["info"]
            results[name]["encoder_params"] = info.get("encoder_params")
    teacher = results["teacher (all-MiniLM-L6-v2)"]["ndcg@10"]
    print(f"\n{'model':34} {'nDCG@10':>8} {'vs teacher':>10} {'MRR@10':>7} {'R@100':>6}")
    for name, r in results.items():
        print(f"{name:34} {r['ndcg@10']:8.4f} {r['ndcg@10'] / teacher:10.1%} {r['mrr@10']:7.4f} {r['recall@100']:6.3f}")
    report = {"command": shlex.join([sys.executable, *sys.argv]), "sets": sets, "train_seconds": seconds,
              "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntrain seconds: {seconds}\n→ {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
