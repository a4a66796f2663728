"""Full bge-m3 shape with XLM-R's real vocabulary: vocabulary trimming + 50pct pruning + export + verify.

bge-m3 cannot be downloaded here, so the base is builtin:bge-m3-random (bge-m3's exact architecture and
head files, random weights) with the tokenizer files of multilingual-e5-small built by
../shared/tools/make_me5_small.py: XLM-R's own 250,002-piece SentencePiece vocabulary, the one bge-m3 uses.
So the token counts and the table size are real, the weights are not. recipes/50pct-10lang.toml (22 layers,
12 heads, hidden 768, FFN 2816; corpus: English and the ten bitext_dev languages) with magnitude scores.
Prints each stage's wall time and peak RSS (process tree, sampled every 50 ms) and the size of the export
against bge-m3's file (model.safetensors + colbert_linear.pt + sparse_linear.pt).

    python ../shared/tools/make_me5_small.py --out /tmp/me5-small           # once, about 30 s
    python benchmarks/vocab_bge_m3_shape.py --me5 /tmp/me5-small [--workdir /tmp/bge-m3-vocab]

About 5 minutes on 2 CPU cores; needs about 5 GB of disk besides the cached random base.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from common import CLI, REPO, measure

RECIPE = REPO / "recipes" / "50pct-10lang.toml"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HEADS = ("colbert_linear.pt", "sparse_linear.pt")


def assemble_base(me5: Path, directory: Path) -> Path:
    """bge-m3-random's weights, heads and sentence-transformers files (linked or copied) with me5's tokenizer."""
    from bgeprune_cli.models.builtins import materialize

    random = materialize("bge-m3-random")
    directory.mkdir(parents=True)
    for path in random.iterdir():
        if path.name in TOKENIZER_FILES or path.name == "sentencepiece.bpe.model":
            continue  # the tiny tokenizer's files: replaced by XLM-R's real one
        target = directory / path.name
        if path.is_dir():
            shutil.copytree(path, target)
        elif path.suffix in (".safetensors", ".pt"):
            target.symlink_to(path)
        else:
            shutil.copyfile(path, target)
    for name in TOKENIZER_FILES:
        shutil.copyfile(me5 / name, directory / name)
    return directory


def file_bytes(directory: Path) -> int:
    return sum((directory / name).stat().st_size for name in ("model.safetensors", *HEADS))


def encoder_parameters(directory: Path) -> int:
    """Elements in model.safetensors, read from its header (no weights loaded); the heads add about 1M."""
    from math import prod

    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return sum(prod(f.get_slice(name).get_shape()) for name in f.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--me5", type=Path, required=True, help="multilingual-e5-small built by make_me5_small.py")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bge-m3-vocab"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    start = time.perf_counter()
    base = assemble_base(args.me5.resolve(), args.workdir / "base")
    print(f"base: {base} ({time.perf_counter() - start:.0f}s)")
    run, out = args.workdir / "run", args.workdir / "out"
    sets = ["--set", f"base.model={base}"]
    stages = [
        ("check (dry run)", ["check", str(RECIPE), *sets]),
        ("magnitude (gate scores)", ["magnitude", str(RECIPE), *sets, "--run-dir", str(run)]),
        ("finalize-masks (+ vocab)", ["finalize-masks", str(run / "train")]),
        ("prune", ["prune", str(run / "masks")]),
        ("export-hf", ["export-hf", str(run), str(out)]),
        ("verify", ["verify", str(out)]),
    ]
    rows = [(name, *measure(CLI + command)) for name, command in stages]
    base_bytes, out_bytes = file_bytes(base), file_bytes(out)
    vocab = json.loads((run / "masks" / "manifest.json").read_text())["info"]["vocab"]
    print("\n$ python " + shlex.join(sys.argv))
    print(f"{'stage':<27}{'wall s':>8}{'peak RSS GiB':>14}")
    for name, wall, peak in rows:
        print(f"{name:<27}{wall:>8.1f}{peak / 2**30:>14.2f}")
    print(f"tokens kept: {vocab['kept']:,} of {vocab['base']:,} ({vocab['fraction']:.1%}); corpus "
          f"{vocab['corpus']['texts']:,} texts, {vocab['corpus']['tokens']:,} tokens")
    print(f"files (model.safetensors + heads): bge-m3 shape {base_bytes / 1e6:,.0f} MB -> export "
          f"{out_bytes / 1e6:,.0f} MB = {out_bytes / base_bytes:.3f}x (goal < 0.35x)")
    base_params, out_params = encoder_parameters(base), encoder_parameters(out)
    print(f"parameters (model.safetensors): {base_params:,} -> {out_params:,} = {out_params / base_params:.3f}x")


if __name__ == "__main__":
    main()
