"""benchmarks/gpu_check.py without a GPU: the no-CUDA exit, and its step runner, budget, table and JSON.

The full CPU dry run (`--allow-cpu`, about 2.5 minutes on 2 cores) is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpu_check
from gpu_check import Result, Step, StepFailed

SCRIPT = Path(gpu_check.__file__)


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    (tmp_path / "tmpdir").mkdir()
    return {**env, "TMPDIR": str(tmp_path / "tmpdir"), **extra}


def test_without_cuda_it_says_so_runs_nothing_and_exits_0(tmp_path):
    env = _env(tmp_path, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, str(SCRIPT), "--json", str(tmp_path / "r.json")], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == gpu_check.NO_CUDA
    assert not (tmp_path / "r.json").exists()
    assert list((tmp_path / "tmpdir").iterdir()) == []  # no work directory was made


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _steps(*specs) -> list[Step]:
    return [Step(name, ["true"], timeout, needs=needs, skip=skip) for name, timeout, needs, skip in specs]


def test_budget_cuts_the_last_timeout_and_skips_the_rest():
    clock, timeouts = FakeClock(), {}

    def execute(step, timeout):
        timeouts[step.name] = timeout
        clock.now += 40
        return Result(step.name, "fail", 10.0, reason="timeout after 10.0 s") if step.name == "c" else \
            Result(step.name, "pass", 40.0)

    steps = _steps(("a", 30, (), None), ("b", 100, (), None), ("c", 100, (), None), ("d", 10, (), None))
    results = gpu_check.run_steps(steps, 90, execute, clock)
    assert timeouts == {"a": 30, "b": 50, "c": 10}  # each step's own timeout, never past the budget
    assert [(r.name, r.status, r.reason) for r in results][2:] == [
        ("c", "fail", "timeout after 10.0 s (the budget's end)"), ("d", "skip", "budget")]


def test_a_failed_or_skipped_step_skips_what_needs_it():
    def execute(step, timeout):
        failed = step.name == "a"
        return Result(step.name, "fail" if failed else "pass", 1.0, reason="exit 1" if failed else "")

    steps = _steps(("a", 9, (), None), ("b", 9, ("a",), None), ("c", 9, (), "no base here"), ("d", 9, ("c",), None),
                   ("e", 9, (), None))
    results = {r.name: r for r in gpu_check.run_steps(steps, 100, execute, FakeClock())}
    assert {n: (r.status, r.reason) for n, r in results.items()} == {
        "a": ("fail", "exit 1"), "b": ("skip", "needs a"), "c": ("skip", "no base here"),
        "d": ("skip", "needs c"), "e": ("pass", "")}


def test_table_and_json_report_every_step():
    results = [Result("train smoke", "pass", 3.21, "12.0 steps/s", {"steps_per_s": 12.0}),
               Result("verify smoke", "fail", 1.0, reason="exit 1: error\nparity: max diff 0.5"),
               Result("bench long", "skip", 0.0, reason="budget")]
    table = gpu_check.render_table(results).splitlines()
    assert table[0].split() == ["step", "status", "s", "result"]
    assert table[2].split() == ["train", "smoke", "pass", "3.2", "12.0", "steps/s"]
    assert table[3].endswith("parity: max diff 0.5") and " fail " in table[3]
    assert table[4].split()[-3:] == ["skip", "0.0", "budget"]
    document = gpu_check.report(results, {"mode": "cuda"})
    assert document["ok"] is False and document["counts"] == {"pass": 1, "fail": 1, "skip": 1}
    assert json.loads(json.dumps(document))["steps"][0]["values"] == {"steps_per_s": 12.0}
    assert gpu_check.report(results[::2], {})["ok"] is True  # skips alone do not fail the check


def test_outputs_go_to_json_path_and_out(tmp_path, monkeypatch):
    (tmp_path / "work" / "logs").mkdir(parents=True)
    (tmp_path / "work" / "logs" / "train-smoke.err").write_text("log")
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    (tmp_path / "work" / "logs" / "train-smoke.out").write_text("{}")
    results = [Result("train smoke", "pass", 1.0), Result("bench", "skip", 0.0)]
    written = gpu_check.write_outputs({"ok": True}, tmp_path / "r.json", tmp_path / "work", results)
    out = tmp_path / "out"
    assert written == [tmp_path / "r.json", out / "gpu_check.json", out / "gpu_check.log"]
    assert json.loads((out / "gpu_check.json").read_text()) == {"ok": True}
    # one file ($OUT returns 8): every step's stderr, a passing step's stdout (its JSON) left out
    assert (out / "gpu_check.log").read_text() == "===== train smoke: train-smoke.err (pass)\nlog\n"


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "late"
    # The grandchild would outlive a plain kill of its parent and keep the step's files open.
    step = Step("hang", ["sh", "-c", f"(sleep 1; touch {marker}) & sleep 30"], 0.3)
    start = time.monotonic()
    result = gpu_check.execute(step, 0.3, tmp_path, dict(os.environ))
    assert (result.status, result.reason) == ("fail", "timeout after 0.3 s")
    assert time.monotonic() - start < 1
    time.sleep(1.2)
    assert not marker.exists()


def test_a_step_that_exits_0_can_still_fail_on_its_output(tmp_path):
    out = {"device": "cpu", "steps": 80, "train_seconds": 4.0, "world_size": 1}
    step = Step("train", [sys.executable, "-c", f"print({json.dumps(json.dumps(out))})"], 30,
                gpu_check.train_key("cuda"))
    result = gpu_check.execute(step, 30, tmp_path, dict(os.environ))
    assert result.status == "fail" and result.reason == "StepFailed: trained on cpu, not cuda"
    assert gpu_check.train_key("cpu")(json.dumps(out))[0] == "20.0 steps/s, cpu fp32, world 1"
    failing = Step("exit", [sys.executable, "-c", "import sys; sys.exit('bad recipe')"], 30)
    assert gpu_check.execute(failing, 30, tmp_path, dict(os.environ)).reason == "exit 1: bad recipe"


def test_key_numbers_are_read_from_each_tools_output():
    overhead = ("command: x\nplain step       12.5 ms (median)\nmasked step      15.0 ms (median)\n"
                "overhead        1.200x\n")
    assert gpu_check.overhead_key(overhead) == ("1.200x masked/plain (12.5 ms plain)",
                                                {"ratio": 1.2, "plain_ms": 12.5, "masked_ms": 15.0})
    with pytest.raises(StepFailed):
        gpu_check.overhead_key("plain step 1 ms\n")
    speed = {"speed": [{"length": 512, "speedup": 1.5}, {"length": 8192, "speedup": 1.75}]}
    assert gpu_check.long_key(json.dumps(speed))[0] == "512: 1.50x 8192: 1.75x"
    speed["speed"][1]["flops_speedup"] = 1.6
    assert gpu_check.long_key(json.dumps(speed)) == ("512: 1.50x 8192: 1.75x (FLOPs 1.60x)", {
        "speedup_by_length": {512: 1.5, 8192: 1.75}, "flops_speedup_by_length": {8192: 1.6}})
    bench = {"environment": {"device": "cuda:0", "dtype": "float16"}, "memory": {"ratio": 0.6},
             "headline": {"batch": 32, "length": 128, "speedup": 1.9, "flops_speedup": 2.0, "speedup_efficiency": 0.95}}
    assert gpu_check.bench_key("cuda", "float16")(json.dumps(bench))[0] == \
        "32x128: speedup 1.90x (FLOPs 2.00x, efficiency 0.95), memory 0.60x"
    with pytest.raises(StepFailed):
        gpu_check.bench_key("cuda", "float32")(json.dumps(bench))
    verify = {"ok": True, "checks": [{"status": "pass"}, {"status": "pass"}, {"status": "skip"}]}
    assert gpu_check.verify_key(json.dumps(verify))[0] == "ok: 2 pass, 1 skip"


def test_the_steps_run_the_repo_cli_inside_the_work_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    steps = gpu_check.build_steps(gpu_check.CUDA_MODE, tmp_path)
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    by_name = {s.name: s for s in steps}
    assert by_name["train minilm-50pct"].skip.startswith("base builtin:all-minilm-l6-v2 needs the PyPI package")
    for step in steps:
        assert step.timeout > 0 and all(need in names[:names.index(step.name)] for need in step.needs)
        paths = [a for a in step.command if a.startswith("/") and a != sys.executable]
        for path in paths:  # outputs under the work dir; the repository only read (recipes, scripts)
            assert path.startswith(str(tmp_path)) or Path(path).is_file(), (step.name, path)
    assert by_name["train smoke"].command[:3] == [sys.executable, "-m", "bgeprune_cli"]
    assert "--device" in by_name["bench bge-m3 float16"].command and "cuda" in by_name["bench bge-m3 float16"].command
    ddp = by_name["torchrun 1 proc smoke"].command
    assert ddp[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    assert str(tmp_path / "ddp") in ddp and str(tmp_path / "smoke") not in ddp


@pytest.mark.slow
def test_cpu_dry_run_passes_every_step(tmp_path):
    env = _env(tmp_path, OUT=str(tmp_path / "out"))
    result = subprocess.run([sys.executable, str(SCRIPT), "--allow-cpu", "--work", str(tmp_path / "work")], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    document = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert document["mode"] == "cpu dry run" and document["ok"]
    statuses = {s["name"]: s["status"] for s in document["steps"]}
    if gpu_check.minilm_missing():  # the one row that may skip: its base is a PyPI package
        assert statuses.pop("train minilm-50pct") == "skip"
    assert set(statuses.values()) == {"pass"}, statuses
