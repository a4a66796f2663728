"""Atomic writes: a file or a directory appears under its final name whole, or not at all.

Both write into a temporary sibling (`.NAME.tmp-XXXX`), fsync it, and `os.replace` it into place.
A directory that replaces an existing one moves the old one aside (`.NAME.old-XXXX`) first and
deletes it only after the new one is in place; an exception (Ctrl-C, SIGTERM, a full disk) between
those two renames puts the old one back. What a kill -9 leaves is cleared by `locks.recover_output`.

Example:
    with atomic_dir(Path("runs/smoke/masks")) as tmp:
        (tmp / "masks.json").write_text("{}")
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UsageError, environment_error


def tmp_name(final: Path) -> Path:
    return final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"


def is_tmp_of(path: Path, final_name: str) -> bool:
    return path.name.startswith(f".{final_name}.tmp-")


def old_name(final: Path) -> Path:
    return final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (so a rename into it survives a power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_writable(directory: Path) -> None:
    """Create and remove a file in `directory` (or its nearest existing ancestor, which would hold the
    directories we create); an OSError becomes an EnvironmentProblem naming the place (exit 4)."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{existing} is a file, so {directory} cannot be created; choose another output path.")
    probe = existing / f".bgeprune-write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise environment_error(exc, f"checking that {existing} is writable") from None


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `final` (replacing any file there)."""
    final = Path(final)
    tmp = tmp_name(final)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def real_output(path: Path) -> Path:
    """Where an output that is a symlink points: the directory is replaced there and the link kept."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


def honour_umask(root: Path) -> None:
    """Give every file and folder under `root` the modes the umask allows: libraries write some files
    private (safetensors: 0600), which a serving account or a colleague then cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_dir(final: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes `final` (where it points, if `final`
    is a symlink), its modes as the umask allows.

    With `replace=False` an existing `final` wins (another process made the same directory first)
    and the new copy is discarded.
    """
    final = real_output(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    tmp.mkdir()
    old = None
    try:
        yield tmp
        honour_umask(tmp)
        fsync_path(tmp)
        if not replace:
            try:
                os.replace(tmp, final)  # fails if another process put a (non-empty) directory there first
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            return
        if final.exists():
            old = old_name(final)
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():  # stopped between the two renames: put the old one back
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
