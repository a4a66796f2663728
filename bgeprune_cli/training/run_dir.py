"""The run directory of `bgeprune train`: one writer at a time, and a `--force` that never loses a good run.

- **One writer.** `locked` holds `RUN/.lock` (an OS `flock`, gone when the process dies) for the
  whole run; a second `train` (or `magnitude`) on the same directory exits 2 naming the holder.
  Under torchrun only rank 0 takes it, and every rank learns the outcome in one collective.
- **What a dead writer left** is cleared under the lock: temporary siblings of `RUN/train` and of
  checkpoints, and a `.old` copy that a killed replace never replaced.
- **`--force` starts over without destroying.** The old run's checkpoints, `metrics.jsonl` and
  `RUN/train` move into `RUN/.replaced/` and are deleted only once the new run has committed its
  first checkpoint. If the new run fails or is killed before that, the old run is put back (at once,
  or by the next `train` on the directory), so it can still be resumed.

Example:
    bgeprune train recipes/smoke.toml --force    # the old runs/smoke stays until step 1's checkpoint
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import torch

from . import checkpoints
from ..artifacts import RUN_LOCK, exclusive, recover_output
from ..filenames import METRICS
from ..errors import Busy

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
