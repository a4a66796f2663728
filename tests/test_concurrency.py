"""One writer per run or output directory, `--force` that never loses a good run, and no debris
after kill -9 or SIGTERM: real processes, killed and signalled at the worst moments."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.config import load_recipe
from bgeprune_cli.errors import BadModelFiles, Busy
from bgeprune_cli.locks import exclusive, lock_path_for, recover_output
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import prune, train
from bgeprune_cli.training import checkpoints
from conftest import SHORT_TRAIN, keep_only, make_run, train_until_crash

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.toml"
HARNESS = Path(__file__).parent / "stage_harness.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
runner = CliRunner()


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {process.stderr and process.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.02)


def _debris(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------- one writer at a time


def test_second_train_on_the_same_run_dir_exits_2_naming_the_holder_and_a_dead_holder_blocks_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "bgeprune_cli", "train", str(SMOKE), "--run-dir", str(run_dir),
                              "--set", "train.steps=100000"], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (run_dir / ".lock").is_file() and (run_dir / "metrics.jsonl").is_file(), first,
                  "the first run's lock and first steps")
        second = subprocess.run([sys.executable, "-m", "bgeprune_cli", "train", str(SMOKE), "--run-dir",
                                 str(run_dir), "--force"], env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "another bgeprune process" in second.stderr
        first.kill()  # kill -9: no handler runs, the lock file stays behind
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert (run_dir / ".lock").is_file()
    third = runner.invoke(app, ["magnitude", str(SMOKE), "--run-dir", str(run_dir), "--force"])
    assert third.exit_code == 0, third.output  # the dead process's lock blocks nothing
    assert not (run_dir / ".lock").exists()  # released and removed


def test_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path):
    lock = lock_path_for(tmp_path / "out")
    with exclusive(lock, "out"):
        with exclusive(lock, "out"):  # the same process may nest (a stage inside a stage's claim)
            pass
        probe = subprocess.run([sys.executable, "-c", "import sys; from bgeprune_cli.locks import exclusive\n"
                                f"try:\n with exclusive({str(lock)!r}, 'out'): sys.exit(0)\n"
                                "except Exception as e: print(e); sys.exit(3)"], capture_output=True, text=True)
        assert probe.returncode == 3 and f"pid {os.getpid()}" in probe.stdout
    assert not lock.exists()
    with pytest.raises(Busy):  # Busy is a usage error: exit 2
        raise Busy("x")
    assert Busy("x").exit_code == 2


# ------------------------------------------------------------ --force keeps the old run until the new one proves itself


def _truncated_base(tmp_path: Path) -> Path:
    from bgeprune_cli.models.loading import resolve_base

    base = tmp_path / "truncated-base"
    shutil.copytree(resolve_base("builtin:tiny-xlm-roberta"), base)
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return base


def test_force_that_fails_to_load_its_base_leaves_the_old_run_resumable(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    good = load_recipe(SMOKE, SHORT_TRAIN, base_dims=recipe_base_dims)
    train_until_crash(monkeypatch, good, run_dir, step=8)
    before = (run_dir / "metrics.jsonl").read_text()
    bad = load_recipe(SMOKE, [*SHORT_TRAIN, f"base.model={json.dumps(str(_truncated_base(tmp_path)))}"])
    with pytest.raises(BadModelFiles, match="truncated or corrupt"):
        train.run(bad, run_dir=run_dir, force=True)
    assert checkpoints.latest(run_dir).step == 8 and (run_dir / "metrics.jsonl").read_text() == before
    assert not (run_dir / ".replaced").exists()
    result = train.run(good, run_dir=run_dir, resume=True)  # the old run is still the one to resume
    assert result["steps"] == 16


def test_force_killed_before_its_first_checkpoint_gives_the_old_run_back_on_the_next_start(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    good = load_recipe(SMOKE, SHORT_TRAIN, base_dims=recipe_base_dims)
    train_until_crash(monkeypatch, good, run_dir, step=8)
    before = (run_dir / "metrics.jsonl").read_text()
    forced = subprocess.Popen([sys.executable, "-m", "bgeprune_cli", "train", str(SMOKE), "--run-dir", str(run_dir),
                               "--force", *[a for s in SHORT_TRAIN for a in ("--set", s)],
                               "--set", "train.checkpoint_every=100000", "--set", "train.steps=100000"],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (run_dir / ".replaced").is_dir() and (run_dir / "metrics.jsonl").is_file(), forced,
                  "the old run set aside and new steps")
    finally:
        forced.kill()
        forced.wait()
    assert not checkpoints.list_checkpoints(run_dir)  # moved aside, not deleted
    result = runner.invoke(app, ["train", str(SMOKE), "--run-dir", str(run_dir), "--resume",
                                 *[a for s in SHORT_TRAIN for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "set aside is back in place" in result.stderr
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert "\n".join(lines[:8]) + "\n" == before and json.loads(lines[-1])["step"] == 16


# ---------------------------------------------------------------- no debris after SIGTERM or kill -9


@pytest.fixture()
def masks_run(tmp_path, builtin_cache) -> Path:
    masks = {"layer": keep_only(3, 0, 2)}  # a stock shape: export-hf takes it as is
    return make_run(tmp_path / "run", "builtin:tiny-xlm-roberta", masks)


def _start(mode: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HARNESS), mode, *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_during_a_write_cleans_up_keeps_the_old_output_and_exits_130(masks_run):
    prune.run(masks_run / "masks")
    old = (masks_run / "pruned" / "manifest.json").read_text()
    process = _start("pause-in-write", "prune", masks_run / "masks", "--force")
    assert process.stdout.readline().strip() == "PAUSED"
    assert _debris(masks_run)  # a half-written artifact exists right now
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert _debris(masks_run) == [] and (masks_run / "pruned" / "manifest.json").read_text() == old
    assert not lock_path_for(masks_run / "pruned").exists()


def test_kill_9_debris_is_removed_by_the_next_run_of_the_stage(masks_run, tmp_path):
    process = _start("pause-in-write", "prune", masks_run / "masks")
    assert process.stdout.readline().strip() == "PAUSED"
    process.kill()
    process.wait()
    assert _debris(masks_run)  # what a kill -9 leaves: a temporary directory with a partial model
    result = runner.invoke(app, ["prune", str(masks_run / "masks")])
    assert result.exit_code == 0, result.output
    assert "removed .pruned.tmp-" in result.stderr and _debris(masks_run) == []


def test_kill_between_the_two_renames_of_a_force_replace_restores_the_old_output(masks_run, tmp_path):
    prune.run(masks_run / "masks")
    export = tmp_path / "export"
    assert runner.invoke(app, ["export-hf", str(masks_run), str(export)]).exit_code == 0
    old = (export / "manifest.json").read_text()
    process = _start("die-between-renames", "export-hf", masks_run, export, "--force")
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert not export.exists() and [n for n in _debris(tmp_path) if ".old-" in n]  # the state a kill leaves
    assert recover_output(export)  # what every stage does first, holding the lock
    assert (export / "manifest.json").read_text() == old and _debris(tmp_path) == []


def test_an_exception_between_the_two_renames_puts_the_old_output_back(tmp_path, monkeypatch):
    from bgeprune_cli import artifacts

    out = tmp_path / "out"
    with artifacts.write_artifact(out, "masks") as tmp:
        (tmp / "a.txt").write_text("old")
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if ".old-" in str(dst):
            raise KeyboardInterrupt  # what SIGTERM raises at that instant

    monkeypatch.setattr(artifacts.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with artifacts.write_artifact(out, "masks", force=True) as tmp:
            (tmp / "a.txt").write_text("new")
    monkeypatch.undo()
    assert (out / "a.txt").read_text() == "old" and _debris(tmp_path) == []
