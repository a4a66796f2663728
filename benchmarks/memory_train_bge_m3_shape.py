"""Peak memory of `bgeprune train` steps at full bge-m3 shape, with and without --gradient-checkpointing.

bge-m3 cannot be downloaded here, so the base is `builtin:bge-m3-random` (the real shape, random
weights) and the target is recipes/50pct.toml's. Texts are long enough that every micro-batch is
exactly BATCH × 256 tokens. Peak RSS comes from `/usr/bin/time -v` (CPU, fp32; on CUDA activations
are bf16 under autocast, so about half). Two steps run: AdamW allocates its state in the first
optimizer step, after that step's activations are freed, so only from the second step on do both
live at once. The difference between the first two rows is what checkpointing saves at this
micro-batch; the third trains the word-embedding table too (`train.freeze_embeddings=false`, 256M of
the 568M parameters), so the difference to the first is what freezing it (the default) saves.

Run (about 9 minutes on 2 CPU cores):
    python benchmarks/memory_train_bge_m3_shape.py --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from common import CAPTURE, DATA, M3_BASE, M3_RECIPE, bgeprune, set_flags

STEPS = 2
TEXT = DATA / "pydocs_train.txt"
# What `train` runs under: its peak RSS is the `Maximum resident set size` this prints to stderr.
TIME = ("/usr/bin/time", "-v")


def long_texts(path: Path, count: int) -> None:
    """Lines of joined paragraphs, each far longer than 256 tokens."""
    paragraphs = [line.strip() for line in TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines, current = [], ""
    for paragraph in paragraphs:
        current += " " + paragraph
        if len(current) > 4000:
            lines.append(current.strip())
            current = ""
        if len(lines) == count:
            break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


ROWS = {"default": [], "--gradient-checkpointing": ["--gradient-checkpointing"],
        "table trained": ["--set", "train.freeze_embeddings=false"]}


def run(batch: int, data: Path, run_dir: Path, extra: list[str]) -> dict:
    sets = [f"base.model={M3_BASE}", f'data.train=["{data}"]', f"train.steps={STEPS}", "train.recovery_steps=0",
            f"train.batch_size={batch}", "data.max_length=256", "train.checkpoint_every=1000"]
    result = bgeprune("train", M3_RECIPE, "--run-dir", run_dir, "--force", "--device", "cpu", "--json",
                      *set_flags(sets), *extra, stdout=CAPTURE, stderr=CAPTURE, under=TIME)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    info = json.loads(result.stdout)
    return {"peak_rss_gib": peak_kb / 2**20, "step_seconds": info["train_seconds"] / STEPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "long.txt"
        long_texts(data, (STEPS + 2) * args.batch_size)
        rows = {name: run(args.batch_size, data, Path(tmp) / f"run{i}", extra)
                for i, (name, extra) in enumerate(ROWS.items())}
    print(f"\nbge-m3 shape (568M, random weights), target 50pct, {STEPS} training steps of {args.batch_size} x 256 "
          f"tokens, CPU fp32")
    print(f"{'':28} {'peak RSS GiB':>13} {'step s':>8}")
    for name, row in rows.items():
        print(f"{name:28} {row['peak_rss_gib']:13.2f} {row['step_seconds']:8.1f}")
    default, checkpointed, trained = rows.values()
    print(f"checkpointing saves {default['peak_rss_gib'] - checkpointed['peak_rss_gib']:.2f} GiB "
          f"at {checkpointed['step_seconds'] / default['step_seconds']:.2f}x the step time")
    print(f"the frozen table (default) saves {trained['peak_rss_gib'] - default['peak_rss_gib']:.2f} GiB and "
          f"{1 - default['step_seconds'] / trained['step_seconds']:.0%} of the step time against training it")


if __name__ == "__main__":
    main()
