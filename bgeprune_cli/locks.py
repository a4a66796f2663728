"""Locks on what a stage writes, and the recovery of what a killed writer left behind.

A stage holds an exclusive lock on its output for its whole life: `RUN/.lock` for the stages that
write `RUN/train` (train, magnitude), a hidden sibling `.NAME.lock` for every other output. It is
an OS `flock`, so the OS releases it when the process dies; a second writer gets `Busy` (exit 2)
naming the holder. Holding the lock, a stage first clears what a dead writer of the same output
left: temporary siblings, and a `.old` copy that a killed `--force` replace never replaced.

Example:
    with claim_output(Path("runs/smoke/masks")):
        ...  # no other bgeprune process writes runs/smoke/masks meanwhile
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import is_tmp_of, real_output
from .errors import Busy, environment_error

RUN_LOCK = ".lock"  # in a run directory, held by the stage that writes RUN/train (train, magnitude)


@contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path` (created, and removed on release) or raise Busy (exit 2).

    The OS drops the lock when the process dies, so a kill -9 leaves at most a stale file that the
    next holder takes over. The lock file names the holder (pid and command) for the Busy message.
    Re-entrant within one process.
    """
    lock_path = Path(lock_path).absolute()
    if lock_path in _HELD:
        _HELD[lock_path] += 1
        try:
            yield
        finally:
            _HELD[lock_path] -= 1
        return
    created = []  # directories made only to hold the lock: removed again if they stay empty
    for parent in reversed(lock_path.parents):
        if not parent.exists():
            created.append(parent)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise environment_error(exc, f"creating {lock_path.parent} for {what}") from None
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:  # a read-only or forbidden location: found before any work
            raise environment_error(exc, f"creating the lock file for {what}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise Busy(f"{what} is being written by another bgeprune process ({_holder(lock_path)}); wait for it "
                       f"to finish, or stop it, or write somewhere else. A process that died holds no lock, "
                       f"so this is a live one.") from None
        try:  # the file may have been removed by the previous holder between our open and our lock
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "argv": sys.argv, "since": int(time.time())}).encode())
    _HELD[lock_path] = 1
    try:
        yield
    finally:
        del _HELD[lock_path]
        try:
            os.unlink(lock_path)  # while still locked, so nobody can take a lock on a file about to vanish
        except OSError:
            pass
        os.close(fd)
        for directory in reversed(created):  # a stage that failed early leaves no empty run directory
            try:
                directory.rmdir()
            except OSError:
                break


_HELD: dict[Path, int] = {}


def _holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text())
        command = " ".join(Path(holder["argv"][0]).name.split() + holder["argv"][1:])[:200]
        return f"pid {holder['pid']}: {command}"
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return f"lock file {lock_path}"


def lock_path_for(out: Path) -> Path:
    """The lock of an output directory: a hidden sibling (the directory itself is replaced whole)."""
    return out.parent / f".{out.name}.lock"


@contextmanager
def claim_output(out: Path) -> Iterator[None]:
    """Hold `out`'s lock for the rest of the block and recover what a dead writer of `out` left (for a
    symlink, those of the directory it points to, which is where the output is written)."""
    out = real_output(out)
    with exclusive(lock_path_for(out), str(out)):
        recover_output(out)
        yield


def recover_output(out: Path) -> list[str]:
    """Remove `.NAME.tmp-*` siblings of `out` and restore a `.NAME.old-*` that nothing replaced.

    Only call while holding `out`'s lock: then no live process is writing them. Returns what it did.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    done = []
    siblings = list(out.parent.iterdir())
    for path in siblings:
        if is_tmp_of(path, out.name):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}, left by an interrupted writer")
    olds = sorted((p for p in siblings if p.name.startswith(f".{out.name}.old-")), key=lambda p: p.stat().st_mtime)
    if olds and not out.exists():
        os.replace(olds.pop(), out)
        done.append(f"restored {out} from the copy an interrupted --force replace had set aside")
    for path in olds:
        shutil.rmtree(path, ignore_errors=True)
    if done:
        from .ui import err, esc

        for line in done:
            err.print(f"[yellow]recovered:[/] {esc(line)}", highlight=False)
    return done
