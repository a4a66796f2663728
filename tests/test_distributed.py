"""`bgeprune train` under torchrun: 2 CPU processes (gloo) against 1 process at the same global batch.

The recipe's step is 2 micro-batches of 4 texts: one process accumulates both, two processes take
one each and DDP averages. Stated tolerance: parameters within 1e-5 (absolute) and losses within
1e-6 (relative) of the one-process run; the finalized masks identical. On this CPU the two runs
agree bit for bit, but a different BLAS or reduction order may move the last bits.
"""

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
import torch
from safetensors.torch import load_file

from bgeprune_cli.config import load_recipe
from bgeprune_cli.errors import RecipeError, UsageError
from bgeprune_cli.stages import finalize_masks
from bgeprune_cli.training import checkpoints
from bgeprune_cli.training.distributed import Dist
from conftest import SHORT_TRAIN

SMOKE = Path(__file__).parents[1] / "recipes" / "smoke.toml"
SETS = [*SHORT_TRAIN, "train.micro_batch_size=4", "train.keep_checkpoints=10"]
PARAM_ATOL, LOSS_RTOL = 1e-5, 1e-6


def _env() -> dict:
    # One thread per process: two processes share the two cores of a CI machine.
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _command(processes: int, run_dir: Path, *extra: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    sets = [arg for s in SETS for arg in ("--set", s)]
    return [*launcher, "-m", "bgeprune_cli", "train", str(SMOKE), "--run-dir", str(run_dir), "--device", "cpu",
            "--json", *sets, *extra]


def _train(processes: int, run_dir: Path, *extra: str) -> dict:
    result = subprocess.run(_command(processes, run_dir, *extra), env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)  # one JSON document: only rank 0 prints


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def _assert_same_training(a: Path, b: Path) -> None:
    for name in ("student", "gates", "lagrangian"):
        x, y = load_file(str(a / "train" / f"{name}.safetensors")), load_file(str(b / "train" / f"{name}.safetensors"))
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], atol=PARAM_ATOL, rtol=0, msg=f"{name}.{key}")
    la, lb = _losses(a), _losses(b)
    assert [s for s, _ in la] == [s for s, _ in lb]
    for (_, x), (_, y) in zip(la, lb):
        assert x == pytest.approx(y, rel=LOSS_RTOL)
    masks = [finalize_masks.run(run / "train", out=None, force=True) for run in (a, b)]
    assert masks[0]["layers"] == masks[1]["layers"] and masks[0]["sizes"] == masks[1]["sizes"]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, builtin_cache) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("dist")
    _train(1, root / "one")
    two = _train(2, root / "two")
    return root / "one", root / "two", two


def test_two_processes_train_what_one_process_trains(one_and_two):
    one, two, result = one_and_two
    assert result["world_size"] == 2 and result["micro_batches_per_rank"] == 1
    assert json.loads((one / "train" / "manifest.json").read_text())["info"]["micro_batches_per_rank"] == 2
    _assert_same_training(one, two)


def test_checkpoint_of_two_processes_resumes_in_one(one_and_two, tmp_path):
    one, two, _ = one_and_two
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "train")
    for path in checkpoints.list_checkpoints(resumed):
        if int(path.name.removeprefix("step-")) > 8:
            shutil.rmtree(path)
    assert checkpoints.latest(resumed).artifact.info["world_size"] == 2
    result = _train(1, resumed, "--resume")
    assert result["world_size"] == 1 and result["steps"] == 16
    _assert_same_training(one, resumed)


def test_sigterm_to_one_rank_stops_every_rank_at_a_checkpoint(tmp_path, builtin_cache):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(_command(2, run_dir, "--set", "train.steps=400", "--set", "train.checkpoint_every=5"),
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while checkpoints.latest(run_dir) is None:
        assert process.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    os.kill(_rank_pid(process.pid, 1), signal.SIGTERM)  # as a scheduler pre-empting one worker would
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and "interrupted at step" in stderr  # rank 0 reports rank 1's request
    newest = checkpoints.latest(run_dir)
    assert 5 <= newest.step < 404 and not (run_dir / "train").exists()


def _rank_pid(launcher_pid: int, rank: int) -> int:
    """The pid of torchrun's worker with RANK=rank (read from /proc)."""
    for child in Path("/proc").iterdir():
        try:
            environ = (child / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if (child.name.isdigit() and f"RANK={rank}".encode() in environ
                and _descends_from(int(child.name), launcher_pid)):
            return int(child.name)
    raise AssertionError(f"no worker with RANK={rank} under {launcher_pid}")


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return False


def test_a_step_that_processes_cannot_share_is_refused():
    dist = Dist(None)
    dist.world = 2
    assert list(dist.local_block(4)) == [0, 1]
    dist.rank = 1
    assert list(dist.local_block(4)) == [2, 3]
    with pytest.raises(UsageError, match="multiple of 2"):
        dist.local_block(3)


def test_micro_batch_size_must_divide_batch_size():
    with pytest.raises(RecipeError, match="micro_batch_size: 3 does not divide train.batch_size = 8"):
        load_recipe(SMOKE, ["train.micro_batch_size=3"])
