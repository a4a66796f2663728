"""What the benchmark scripts share: where things are, the one way they start bgeprune, and their settings.

A script imports it as a sibling (`python benchmarks/x.py` puts benchmarks/ on sys.path); tests reach it,
and the scripts they test, through pytest's `pythonpath = ["benchmarks"]` (pyproject.toml).

    from common import CAPTURE, bgeprune
    verified = json.loads(bgeprune("verify", export, "--json", stdout=CAPTURE).stdout)
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The development data beside the checkout (docs/data.md): pydocs, bitext_dev and the training texts.
DATA = REPO.parent / "shared" / "data"

# With this interpreter, so a script runs the bgeprune_cli it imports whatever `bgeprune` is on PATH (or
# none is: the GPU machine puts the repository on PYTHONPATH and installs no entry point).
CLI = [sys.executable, "-m", "bgeprune_cli"]
# Where `bgeprune`'s stdout and stderr go. Its stderr carries progress and errors, so it is shown unless captured.
QUIET = subprocess.DEVNULL  # dropped: the scripts read the artifacts a stage writes, not its summary
SHOW = None                 # to the terminal (bench's tables)
CAPTURE = subprocess.PIPE   # kept on the result, as text

# The full bge-m3 shape with random weights (bge-m3 itself cannot be downloaded on the development
# machine) and the 50pct target: the pair the bge-m3-shape scripts and the GPU check prune.
M3_BASE = "builtin:bge-m3-random"
M3_RECIPE = REPO / "recipes" / "50pct.toml"

# The quality scripts' student and teacher: all-MiniLM-L6-v2 to half its encoder.
MINILM_RECIPE = REPO / "recipes" / "minilm-50pct.toml"
MINILM_TEACHER = "builtin:all-minilm-l6-v2"
# bench's speed settings for every point on the quality curve (quality_curve.py and
# quality_multilingual_point.py), so their speedups compare.
CURVE_SPEED = ["--batch-sizes", "32", "--seq-lengths", "128", "--repeats", "6", "--no-memory", "--device", "cpu"]


def set_flags(sets: Sequence[str]) -> list[str]:
    """Recipe overrides as bgeprune's repeated --set options."""
    return [arg for s in sets for arg in ("--set", s)]


def bgeprune(*args: object, stdout: int | None = QUIET, stderr: int | None = SHOW,
             under: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run `bgeprune ARGS` (as CLI), printed first as a reader would type it; a failure raises.

    `under` is a command to run it under (`/usr/bin/time -v`); `stdout` and `stderr` are QUIET, SHOW or CAPTURE.
    """
    words = [str(a) for a in args]
    print("$", shlex.join([*under, "bgeprune", *words]), flush=True)
    return subprocess.run([*under, *CLI, *words], check=True, stdout=stdout, stderr=stderr, text=True)


def measure(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of `command` and its children (sampled every 50 ms)."""
    import psutil  # here, not above: the GPU check imports this module on a machine that may lack it

    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak = 0

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = proc.wait()
    sampler.join()
    if code != 0:
        sys.exit(f"{' '.join(command)} failed with exit code {code}")
    return time.perf_counter() - start, peak


def m3_shape_export(run: Path, out: Path) -> None:
    """The 50pct export of the random full bge-m3 shape at OUT (run dir RUN), unless OUT already has one.

    Gate scores come from `bgeprune magnitude`: the speed scripts time shapes, not which units are kept.
    """
    if (out / "model.safetensors").is_file() and (out / "manifest.json").is_file():
        return
    bgeprune("magnitude", M3_RECIPE, "--set", f"base.model={M3_BASE}", "--run-dir", run, "--force")
    bgeprune("finalize-masks", run / "train", "--force")
    bgeprune("prune", run / "masks", "--force")
    bgeprune("export-hf", run, out, "--force")
