"""Vocabulary trimming on multilingual-e5-small: a real XLM-R vocabulary (250,002 SentencePiece pieces).

Trims the model to English plus the ten bitext_dev languages, using ../shared/data/multilingual_train.txt
and pydocs_train.txt as the corpus (a vocabulary-only recipe: check -> magnitude -> finalize-masks ->
prune -> export-hf -> verify), then compares trimmed and untrimmed in one `bgeprune bench` run: tokens,
parameters and weight file size, coverage per language on bitext_dev (texts tokenized exactly as by the
base), bitext accuracy per language and pydocs nDCG@10. Speed is not timed: trimming leaves the encoder,
and so the compute per token, unchanged.

    python ../shared/tools/make_me5_small.py --out /tmp/me5-small           # once, about 30 s
    python benchmarks/vocab_me5_small.py --me5 /tmp/me5-small --out runs/vocab-me5

About 10 minutes on 2 CPU cores; the bench report is OUT/bench (report.json, report.png).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from common import DATA, bgeprune

CORPUS = [DATA / "multilingual_train.txt", DATA / "pydocs_train.txt"]


def timed(*args: object) -> float:
    """Wall seconds of `bgeprune ARGS`."""
    start = time.perf_counter()
    bgeprune(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--me5", type=Path, required=True, help="multilingual-e5-small built by make_me5_small.py")
    parser.add_argument("--out", type=Path, default=Path("runs/vocab-me5"))
    args = parser.parse_args()
    if not (args.me5 / "tokenizer.json").is_file():
        sys.exit(f"{args.me5} is not a model; build it: "
                 f"python {DATA.parent / 'tools' / 'make_me5_small.py'} --out {args.me5}")
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = args.out / "me5-10lang.toml"
    recipe.write_text(f'[base]\nmodel = "{args.me5.resolve()}"\n\n'
                      f'[vocab]\ncorpus = {json.dumps(list(map(str, CORPUS)))}\n')
    run, export = args.out / "run", args.out / "export"
    times = {"check": timed("check", recipe), "magnitude": timed("magnitude", recipe, "--run-dir", run, "--force"),
             "finalize-masks": timed("finalize-masks", run / "train", "--force"),
             "prune": timed("prune", run / "masks", "--force"), "export-hf": timed("export-hf", run, export, "--force"),
             "verify": timed("verify", export)}
    times["bench"] = timed("bench", export, "--compare", args.me5.resolve(), "-o", args.out / "bench", "--force",
                           "--beir", DATA / "pydocs", "--bitext", DATA / "bitext_dev", "--no-speed",
                           "--max-length", "256")
    report = json.loads((args.out / "bench" / "report.json").read_text())
    summary(report, times)


def summary(report: dict, times: dict) -> None:
    m, b = report["models"]["model"], report["models"]["base"]
    print("\n$ python " + shlex.join(sys.argv))
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"{'':<34}{'untrimmed':>14}{'trimmed':>14}{'ratio':>9}")
    rows = [("tokens (vocabulary)", b["vocab"], m["vocab"]), ("parameters", b["params"]["total"], m["params"]["total"]),
            ("  embeddings (word, position, LN)", b["params"]["embeddings"], m["params"]["embeddings"]),
            ("weights on disk (MB)", b["file_bytes"] / 1e6, m["file_bytes"] / 1e6)]
    for name, base, model in rows:
        print(f"{name:<34}{base:>14,.0f}{model:>14,.0f}{model / base:>9.3f}")
    memory = report.get("memory", {})
    if "ratio" in memory:
        print(f"{'peak RSS, load + one batch (MB)':<34}{memory['base']['model_rss_bytes'] / 1e6:>14,.0f}"
              f"{memory['model']['model_rss_bytes'] / 1e6:>14,.0f}{memory['ratio']:>9.3f}")
    quality = report["quality"]
    print(f"\n{'data':<22}{'coverage':>9}{'tokens kept':>12}{'untrimmed':>11}{'trimmed':>9}{'ratio':>8}")
    coverage = report["coverage"]
    for name, data in quality.get("bitext", {}).items():
        values, c = data["modes"]["dense"], coverage[f"bitext {name}"]
        print(f"{'bitext ' + name + ' acc':<22}{c['exact']:>9.1%}{c['tokens_kept']:>12.2%}"
              f"{values['base']['accuracy']:>11.4f}"
              f"{values['model']['accuracy']:>9.4f}{values['ratio']['accuracy']:>8.1%}")
    english = coverage["bitext en (every file's English side)"]
    print(f"{'bitext en (all files)':<22}{english['exact']:>9.1%}{english['tokens_kept']:>12.2%}")
    for name, data in quality.get("beir", {}).items():
        values, c = data["modes"]["dense"], coverage[f"{name} (queries + documents)"]
        print(f"{name + ' nDCG@10':<22}{c['exact']:>9.1%}{c['tokens_kept']:>12.2%}{values['base']['ndcg@10']:>11.4f}"
              f"{values['model']['ndcg@10']:>9.4f}{values['ratio']['ndcg@10']:>8.1%}")
    print(f"\nbench command: {report['command']}")


if __name__ == "__main__":
    main()
