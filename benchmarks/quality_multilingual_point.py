"""The multilingual point of the quality curve: multilingual-e5-small pruned to half its encoder.

multilingual-e5-small (BERT 12 x 384 with XLM-R's 250k vocabulary, a real multilingual teacher rebuilt
offline by benchmarks/me5_small.py) goes through `bgeprune train` with the same budget as the all-MiniLM
curve (recipes/minilm-50pct.toml: 700 pruning + 300 recovery steps of 16 passages, its learning rates
and the default levers; only base, shape, data and name overridden) to the same shape ratio: 10 of 12
layers and FFN 608 of 1536 (50.2% of the encoder removed; hidden and heads kept). It distils on
../shared/data/multilingual_train.txt mixed with pydocs_train.txt (one shuffled stream, about 9
multilingual texts to 1 English), then finalize-masks -> prune -> export-hf -> verify and one
`bgeprune bench` against the teacher: bitext_dev accuracy per language (an average hides a language
that broke), pydocs nDCG@10 and the speedup at batch 32 x 128. Prints a table and writes
OUT/result.json (read by quality_curve.py for its plot).

    python benchmarks/quality_multilingual_point.py --out runs/multilingual-1x               # about 25 min, 2 CPU cores
    python benchmarks/quality_multilingual_point.py --out runs/multilingual-1x --bench-only  # re-measure (idle machine)
    python benchmarks/quality_multilingual_point.py --out runs/ml-frozen --steps 300 --set train.freeze_embeddings=true
    python benchmarks/quality_multilingual_point.py --out runs/ml-matryoshka --steps 300 --dims 192,96 \
        --set 'distill.matryoshka_dims=[384,192,96]'
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common import CURVE_SPEED, DATA, MINILM_RECIPE, REPO, bgeprune, set_flags
from me5_small import MissingFixture, me5_small_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--me5", type=Path, help="a built multilingual-e5-small (default: build it into the cache)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "multilingual-1x")
    parser.add_argument("--steps", type=int, default=1000,
                        help="total steps (70%% pruning, 30%% recovery; the target ramps in over the first 25%%)")
    parser.add_argument("--bench-only", action="store_true", help="bench the finished export again")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="one more recipe override (e.g. train.freeze_embeddings=true)")
    parser.add_argument("--dims", help="bench quality also at these output widths (bench --dims), e.g. 192,96")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/quality_multilingual_point.py", *sys.argv[1:]])
    try:
        teacher = (args.me5 or me5_small_dir()).resolve()
    except MissingFixture as exc:
        sys.exit(str(exc))
    out = args.out
    run, export = out / "run", out / "export"
    if not args.bench_only:
        prune_steps = round(args.steps * 0.7)
        sets = [f"base.model={json.dumps(str(teacher))}", "target.layers=10", "target.ffn=608",
                f'data.train={json.dumps([str(DATA / "multilingual_train.txt"), str(DATA / "pydocs_train.txt")])}',
                f"train.steps={prune_steps}", f"train.recovery_steps={args.steps - prune_steps}",
                f"train.target_warmup_steps={round(args.steps * 0.25)}",  # 250 of 1000, as the recipe
                'export.name="multilingual-e5-small-50pct"', *args.extra]
        bgeprune("train", str(MINILM_RECIPE), "--run-dir", str(run), "--force", "--teacher-cache",
                 str(out / "teacher-cache"), *set_flags(sets))
        bgeprune("finalize-masks", str(run / "train"), "--force")
        bgeprune("prune", str(run / "masks"), "--force")
        bgeprune("export-hf", str(run), str(export), "--force")
        bgeprune("verify", str(export))
    bench = ["bench", str(export), "--compare", str(teacher), "--beir", str(DATA / "pydocs"),
             "--bitext", str(DATA / "bitext_dev"), *CURVE_SPEED, "-o", str(out / "bench"), "--force",
             *(["--dims", args.dims] if args.dims else [])]
    bgeprune(*bench)
    write_result(out, command, shlex.join(["bgeprune", *bench]))


def write_result(out: Path, command: str, bench_command: str) -> dict:
    """OUT/result.json from the bench report and the training run's own record of its steps."""
    report = json.loads((out / "bench" / "report.json").read_text())
    steps = json.loads((out / "run" / "train" / "manifest.json").read_text())["info"]["steps"]
    result = {**summarize(report, command, bench_command), "steps": steps}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summarize(report: dict, command: str, bench_command: str) -> dict:
    quality = report["quality"]
    languages = {name: data["modes"]["dense"] for name, data in quality.get("bitext", {}).items()}
    pydocs = quality["beir"]["pydocs"]["modes"]["dense"]
    result = {"model": "multilingual-e5-small", "method": "l0", "target": "50%",
              "removed": 1 - report["size_ratio"]["params_encoder"], "speedup": report["headline"].get("speedup"),
              "pydocs": {"teacher": pydocs["base"]["ndcg@10"], "student": pydocs["model"]["ndcg@10"],
                         "retention": pydocs["ratio"]["ndcg@10"]},
              "bitext": {name: {"teacher": v["base"]["accuracy"], "student": v["model"]["accuracy"],
                                "retention": v["ratio"]["accuracy"]} for name, v in languages.items()},
              "command": command, "bench_command": bench_command}
    bitext = result["bitext"]
    result["bitext_mean_retention"] = sum(v["student"] for v in bitext.values()) / sum(
        v["teacher"] for v in bitext.values())
    print(f"\n$ {command}")
    print(f"multilingual-e5-small, {result['removed']:.1%} of the encoder removed, "
          f"speedup {result['speedup']:.2f}x (batch 32 x 128, CPU)")
    print(f"{'data':<24}{'teacher':>9}{'student':>9}{'retention':>11}")
    for name, v in bitext.items():
        print(f"{'bitext ' + name + ' accuracy':<24}{v['teacher']:>9.4f}{v['student']:>9.4f}{v['retention']:>11.1%}")
    print(f"{'bitext, all languages':<24}{'':>18}{result['bitext_mean_retention']:>11.1%}")
    p = result["pydocs"]
    print(f"{'pydocs nDCG@10':<24}{p['teacher']:>9.4f}{p['student']:>9.4f}{p['retention']:>11.1%}")
    print(f"bench command: {bench_command}")
    return result


if __name__ == "__main__":
    main()
