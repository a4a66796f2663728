"""The run directory of `bgeprune train`: one writer at a time, what it may resume, and a `--force` that
never loses a good run.

- **One writer.** `locked` holds `RUN/.lock` (an OS `flock`, gone when the process dies) for the
  whole run; a second `train` (or `magnitude`) on the same directory exits 2 naming the holder.
  Under torchrun only rank 0 takes it, and every rank learns the outcome in one collective.
- **What a dead writer left** is cleared under the lock: temporary siblings of `RUN/train` and of
  checkpoints, and a `.old` copy that a killed replace never replaced.
- **Resume or refuse.** `prepare` finds the checkpoint to resume from, or refuses to clobber an
  earlier run without --resume / --force; `check_resume` refuses a changed recipe or data.
- **`--force` starts over without destroying.** The old run's checkpoints, `metrics.jsonl` and
  `RUN/train` move into `RUN/.replaced/` and are deleted only once the new run has committed its
  first checkpoint. If the new run fails or is killed before that, the old run is put back (at once,
  or by the next `train` on the directory), so it can still be resumed.

Example:
    bgeprune train recipes/smoke.toml --force    # the old runs/smoke stays until step 1's checkpoint
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import torch

from ..artifacts import ensure_writable
from ..errors import Busy, UsageError
from ..filenames import MANIFEST, METRICS
from ..locks import RUN_LOCK, exclusive, recover_output
from . import checkpoints

TRAIN = "train"  # RUN/train, the train-run artifact
SET_ASIDE = ".replaced"
_PIECES = (checkpoints.CHECKPOINTS, METRICS, TRAIN)


@contextmanager
def locked(run_dir: Path, dist) -> Iterator[None]:
    """Hold RUN/.lock on rank 0 for the block; every rank raises Busy if rank 0 could not take it."""
    with ExitStack() as stack:
        busy: Busy | None = None
        if dist.is_main:
            try:
                stack.enter_context(exclusive(run_dir / RUN_LOCK, str(run_dir)))
                recover(run_dir)
            except Busy as exc:
                busy = exc
        # One collective so that no rank waits at a barrier that rank 0 will never reach.
        failed = dist.reduce(torch.tensor([float(busy is not None)]), "sum")
        if busy is not None:
            raise busy
        if float(failed[0]) > 0:
            raise Busy(f"{run_dir} is being written by another bgeprune process (rank 0 says so).")
        yield


def recover(run_dir: Path) -> None:
    """Clear what a killed writer left (call holding the lock)."""
    recover_output(run_dir / TRAIN)
    root = checkpoints.checkpoint_dir(run_dir)
    if root.is_dir():
        for leftover in root.iterdir():
            if leftover.name.startswith(".step-"):
                shutil.rmtree(leftover, ignore_errors=True)
    aside = run_dir / SET_ASIDE
    if aside.is_dir():
        if checkpoints.list_checkpoints(run_dir):  # the new run committed, then died before tidying up
            shutil.rmtree(aside, ignore_errors=True)
        else:
            restore(run_dir)
            from ..ui import err, esc

            err.print(f"[yellow]recovered:[/] {esc(run_dir)}: the run that an interrupted 'train --force' had set "
                      f"aside is back in place (the new run never wrote a checkpoint).", highlight=False)


def set_aside(run_dir: Path) -> bool:
    """Move the old run's pieces into RUN/.replaced (atomic renames); True if there was anything."""
    present = [name for name in _PIECES if (run_dir / name).exists()]
    if not present:
        return False
    aside = run_dir / SET_ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    for name in present:
        os.replace(run_dir / name, aside / name)
    return True


def restore(run_dir: Path) -> None:
    """Put a set-aside run back, replacing whatever the failed new run wrote."""
    aside = run_dir / SET_ASIDE
    if not aside.is_dir():
        return
    for name in _PIECES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if (aside / name).exists():
            os.replace(aside / name, target)
    shutil.rmtree(aside, ignore_errors=True)


def drop_set_aside(run_dir: Path) -> None:
    """The new run has proved itself (a committed checkpoint): the old one can go."""
    shutil.rmtree(run_dir / SET_ASIDE, ignore_errors=True)


def prepare(run_dir: Path, resume: bool, force: bool, dist) -> checkpoints.Checkpoint | None:
    """The checkpoint to resume from (or None), after refusing to clobber an earlier run by accident.

    Every rank checks (they see the same files, so they refuse alike). With --force, rank 0 sets the
    old run aside, to be deleted once the new run has committed a checkpoint.
    """
    out = run_dir / TRAIN
    existing = checkpoints.latest(run_dir)
    if resume:
        if existing is None:
            raise UsageError(f"--resume: {run_dir} has no complete checkpoint to resume from; "
                             f"drop --resume to start a new run.")
        if (out / MANIFEST).is_file() and not force:
            raise UsageError(f"--resume: {out} already holds the finished run; nothing to resume "
                             f"(--force retrains from the checkpoint).")
        return existing
    if (existing is not None or (out / MANIFEST).is_file()) and not force:
        what = f"checkpoints up to step {existing.step}" if existing else "a finished train-run"
        raise UsageError(f"{run_dir} already has {what}; pass --resume to continue it, --force to start over, "
                         f"or --run-dir for a new directory.")
    ensure_writable(out, force, "train-run")
    dist.barrier()  # nobody may still be reading what rank 0 is about to move
    if dist.is_main:
        set_aside(run_dir)
    dist.barrier()
    return None


def check_resume(checkpoint: checkpoints.Checkpoint, recipe_sha256: str, data_fingerprints: dict,
                 force: bool) -> None:
    """Refuse to resume a run whose recipe or data changed since the checkpoint (unless forced)."""
    changed = []
    if checkpoint.artifact.manifest["recipe_sha256"] != recipe_sha256:
        changed.append("the recipe (or a --set override)")
    if checkpoint.artifact.info.get("data") != data_fingerprints:
        changed.append("the training data")
    if changed and not force:
        raise UsageError(f"cannot resume {checkpoint.artifact.path}: {' and '.join(changed)} changed since it was "
                         f"written, so the run would not be the one it started as. Restore them, or pass "
                         f"--force to continue anyway.")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so metrics.jsonl reads as one run."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(kept), encoding="utf-8")
