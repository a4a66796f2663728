"""Quality against speed for three ways of pruning all-MiniLM-L6-v2 at three sizes, under one budget.

Methods, each with the same data (../shared/data/pydocs_train.txt), batch and total step count:
  l0         `bgeprune train`: learned L0 masks while distilling, then recovery (the recipe's split)
  magnitude  `bgeprune magnitude` (training-free mask), then recovery-only distillation for every step
  naive      evenly spaced layers kept (no FFN pruning), recovery-only distillation for every step
Targets (encoder parameters removed; stock shapes only, hidden 384 and 12 heads kept):
  30%  l0/magnitude: 5 layers, FFN 1152 (30.5%)   naive: 4 of 6 layers (33.3%)
  50%  l0/magnitude: 5 layers, FFN 608 (50.2%)    naive: 3 of 6 layers (50.0%)
  70%  l0/magnitude: 4 layers, FFN 256 (70.3%)    naive: 2 of 6 layers (66.7%)
Every student goes through finalize-masks → prune → export-hf → verify, then `bgeprune bench` against
the teacher in one run: nDCG@10 on ../shared/data/pydocs and the measured speedup at batch 32 × 128.
Every method reads the teacher's outputs from one cache (OUT/teacher-cache, bitwise the teacher's
forward pass), so only the first point pays for the teacher and no method gets different targets.
Writes OUT/results.json (resumable: finished points are kept) and docs/quality-curve.png.
`--reuse 50%:l0=runs/ablation/importance` takes a point from a run that used exactly this point's
settings (quality_ablation.py's `importance` variant is the 50% l0 point) instead of training it again.
`--rebench` measures every finished point again (the speedup wants an otherwise idle machine; the
quality numbers do not change).

Run (about 15 minutes per point at the full budget on 2 CPU cores; --steps scales every method):
    python benchmarks/quality_curve.py --out runs/curve --steps 1000
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from common import CURVE_SPEED, DATA, MINILM_RECIPE, MINILM_TEACHER, REPO, bgeprune, set_flags

TARGETS = {"30%": {"layers": 5, "ffn": 1152, "naive": 4}, "50%": {"layers": 5, "ffn": 608, "naive": 3},
           "70%": {"layers": 4, "ffn": 256, "naive": 2}}
METHODS = ("l0", "magnitude", "naive")


def evenly_spaced(keep: int, layers: int = 6) -> torch.Tensor:
    chosen = {round(i * (layers - 1) / max(1, keep - 1)) for i in range(keep)} if keep > 1 else {layers - 1}
    return torch.tensor([i in chosen for i in range(layers)])


def train(method: str, target: dict, run_dir: Path, steps: int, extra: list[str], cache: Path,
          prune_fraction: float) -> None:
    sizes = [f"target.layers={target['layers']}", f"target.ffn={target['ffn']}"]
    common = [*extra, "train.checkpoint_every=100000"]
    if method == "l0":
        prune_steps = round(steps * prune_fraction)
        phases = [f"train.steps={prune_steps}", f"train.recovery_steps={steps - prune_steps}"]
        bgeprune("train", str(MINILM_RECIPE), "--run-dir", str(run_dir), "--force", "--teacher-cache", str(cache),
                 *set_flags(sizes + common + phases))
        return
    recovery = [f"train.recovery_steps={steps}"]  # --masks: recovery only, train.steps is not used
    if method == "magnitude":
        score = run_dir / "score"
        bgeprune("magnitude", str(MINILM_RECIPE), "--run-dir", str(score), "--force", *set_flags(sizes + common))
        bgeprune("finalize-masks", str(score / "train"), "--force")
        bgeprune("train", str(MINILM_RECIPE), "--masks", str(score / "masks"), "--run-dir", str(run_dir), "--force",
                 "--teacher-cache", str(cache), *set_flags(sizes + common + recovery))
        return
    # naive: masks no stage writes, so through the Python API (the same recovery as --masks)
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import recipe_base_dims
    from bgeprune_cli.stages import train as train_stage

    sizes = [f"target.layers={target['naive']}", "target.ffn=1536"]
    masks = {"layer": evenly_spaced(target["naive"])}
    print(f"$ (python) naive: layers {masks['layer'].nonzero().flatten().tolist()} + recovery-only distillation",
          flush=True)
    train_stage.run(load_recipe(MINILM_RECIPE, sizes + common + recovery, base_dims=recipe_base_dims),
                    run_dir=run_dir, force=True, fixed_masks=masks, teacher_cache=cache)


def run_dir_of(out: Path, method: str, name: str) -> Path:
    return out / f"{name.rstrip('%')}-{method}"


def point(method: str, name: str, out: Path, steps: int, extra: list[str], prune_fraction: float) -> dict:
    run_dir = run_dir_of(out, method, name)
    train(method, TARGETS[name], run_dir, steps, extra, out / "teacher-cache", prune_fraction)
    bgeprune("finalize-masks", str(run_dir / "train"), "--force")
    bgeprune("prune", str(run_dir / "masks"), "--force")
    bgeprune("export-hf", str(run_dir), str(run_dir / "export"), "--force")
    bgeprune("verify", str(run_dir / "export"))
    return {"method": method, "target": name, "export": str(run_dir / "export"),
            **measure(run_dir / "export", run_dir / "bench")}


def measure(export: Path, bench_dir: Path) -> dict:
    """`bgeprune bench` of one finished point against the teacher: quality and speed in one run."""
    bench = ["bench", str(export), "--compare", MINILM_TEACHER, "--beir", str(DATA / "pydocs"), *CURVE_SPEED,
             "-o", str(bench_dir), "--force"]
    bgeprune(*bench)
    report = json.loads((bench_dir / "report.json").read_text())
    dense = report["quality"]["beir"]["pydocs"]["modes"]["dense"]
    return {"removed": 1 - report["size_ratio"]["params_encoder"],
            "ndcg@10": dense["model"]["ndcg@10"], "teacher_ndcg@10": dense["base"]["ndcg@10"],
            "retention": dense["ratio"]["ndcg@10"], "speedup": report["headline"].get("speedup"),
            "bench_command": shlex.join(["bgeprune", *bench])}


def plot(results: dict, path: Path, command: str, multilingual: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        pts = sorted((r["speedup"], r["retention"], r["target"]) for r in results.values() if r["method"] == method)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] * 100 for p in pts], marker="o", label=method)
            for x, y, label in pts:
                ax.annotate(label, (x, y * 100), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if multilingual:  # the multilingual-e5-small point (benchmarks/quality_multilingual_point.py): its own teacher
        x, steps = multilingual["speedup"], multilingual["steps"]
        for value, marker, label in ((multilingual["pydocs"]["retention"], "s", "pydocs"),
                                     (multilingual["bitext_mean_retention"], "^", "bitext, 10 languages")):
            ax.scatter([x], [value * 100], marker=marker, color="black", zorder=3,
                       label=f"multilingual-e5-small, l0 50%, {steps} steps: {label}")
    ax.axhline(95, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("measured speedup vs the teacher (batch 32 × 128, CPU)")
    ax.set_ylabel("pydocs nDCG@10, % of the teacher")
    ax.set_title("all-MiniLM-L6-v2 pruned: quality vs speed, same budget per method", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, command, fontsize=6, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "curve")
    parser.add_argument("--steps", type=int, default=1000, help="total training steps of every method")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--l0-prune-fraction", type=float, default=0.7,
                        help="l0's share of the steps spent pruning; the rest recovers (the recipe's 700 + 300)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="an override for every run")
    parser.add_argument("--reuse", action="append", default=[], metavar="TARGET:METHOD=RUN_DIR",
                        help="take a point from a finished run with the same settings (it is benched here), "
                             "e.g. 50%%:l0=runs/ablation/importance")
    parser.add_argument("--rebench", action="store_true", help="bench every finished point again (idle machine)")
    parser.add_argument("--multilingual", type=Path, default=REPO / "runs" / "multilingual-1x" / "result.json",
                        help="the multilingual point's result (benchmarks/quality_multilingual_point.py), plotted "
                             "if present")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "quality-curve.png")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/quality_curve.py", *sys.argv[1:]])
    print("command:", command, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if args.rebench:
        for key, r in results.items():
            run_dir = run_dir_of(args.out, r["method"], r["target"])
            r.update(measure(Path(r.get("export") or run_dir / "export"), run_dir / "bench"), bench_rerun=command)
            path.write_text(json.dumps(results, indent=2) + "\n")
    for spec in args.reuse:
        point_name, run_dir = spec.split("=", 1)
        name, method = point_name.split(":")
        if f"{name} {method}" not in results:
            export, bench_dir = Path(run_dir) / "export", run_dir_of(args.out, method, name) / "bench"
            results[f"{name} {method}"] = {"method": method, "target": name, "export": str(export),
                                           **measure(export, bench_dir), "command": command}
            path.write_text(json.dumps(results, indent=2) + "\n")
    for name in args.targets.split(","):
        for method in args.methods.split(","):
            key = f"{name} {method}"
            if key not in results:
                results[key] = {**point(method, name, args.out, args.steps, args.extra, args.l0_prune_fraction),
                                "command": command}
                path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'target':7} {'method':10} {'removed':>8} {'nDCG@10':>8} {'vs teacher':>10} {'speedup':>8}")
    order = {name: i for i, name in enumerate(TARGETS)} | {m: i for i, m in enumerate(METHODS)}
    for r in sorted(results.values(), key=lambda r: (order[r["target"]], order[r["method"]])):
        print(f"{r['target']:7} {r['method']:10} {r['removed']:8.1%} {r['ndcg@10']:8.4f} {r['retention']:10.1%} "
              f"{r['speedup']:8.2f}")
    print(f"teacher: pydocs nDCG@10 {next(iter(results.values()))['teacher_ndcg@10']:.4f}")
    multilingual = json.loads(args.multilingual.read_text()) if args.multilingual.is_file() else None
    plot(results, args.png, command, multilingual)
    print(f"→ {path}, {args.png}")


if __name__ == "__main__":
    main()
