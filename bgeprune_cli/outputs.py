"""Where a stage may write: never over what it reads, and `--force` replaces only its own previous output.

Every writing stage names its output, its kind and what it reads. Refused whatever `--force` says
(exit 2, nothing touched): an output that is, contains or lies inside an input or any artifact that
input was made from (its lineage, read from the manifests), or that holds anything but a previous
output of the same kind. Paths are compared after resolving symlinks and `..`. Without `--force` a
previous output of the same kind is refused too, with what replacing it would delete.

Example:
    bgeprune export-hf runs/smoke runs/smoke --force    # exit 2: runs/smoke holds the run it exports
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .errors import UsageError
from .filenames import MANIFEST
from .published import resolve_recorded

MAX_LINEAGE = 64  # artifacts followed through manifests: a pipeline has a handful, a loop would have more


def _manifest(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lineage(reads: Iterable[Path]) -> list[Path]:
    """The resolved directories of `reads` and of every artifact their manifests name as inputs (an export's
    relative paths against its directory; an input recorded by name only leads nowhere)."""
    found: list[Path] = []
    todo = [Path(p) for p in reads]
    while todo and len(found) < MAX_LINEAGE:
        path = todo.pop(0).resolve()
        if path in found:
            continue
        found.append(path)
        manifest = _manifest(path) or {}
        for entry in manifest.get("inputs") or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                todo.append(resolve_recorded(entry["path"], path))
    return found


def _relation(out: Path, read: Path) -> str | None:
    if out == read:
        return "is"
    if out in read.parents:
        return "contains"
    if read in out.parents:
        return "lies inside"
    return None


def _contents(directory: Path, limit: int = 4) -> str:
    names = sorted(p.name for p in directory.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_output(out: Path, force: bool, kind: str, reads: Iterable[Path] = ()) -> None:
    """Refuse an output that would destroy an input, its lineage or anything but a previous `kind` output."""
    out = Path(out)
    target = out.resolve()
    for read in lineage(reads):
        relation = _relation(target, read)
        if relation is not None:
            what = _manifest(read) or {}
            name = f"the {what['kind']} at {read}" if isinstance(what.get("kind"), str) else str(read)
            raise UsageError(f"{out} {relation} {name}, which this stage reads (or which it was made from): "
                             f"writing there would destroy it, --force or not. Choose an output outside it.")
    if not target.is_dir() or not any(target.iterdir()):
        return
    manifest = _manifest(target)
    previous = manifest is not None and manifest.get("kind") == kind
    if not previous:
        held = f"a {manifest.get('kind')!s} artifact" if manifest else f"files that are not a bgeprune {kind}"
        raise UsageError(f"{out} holds {held} ({_contents(target)}); only a previous {kind} is ever replaced, "
                         f"--force or not. Choose a new or empty directory.")
    if not force:
        count = len(manifest.get("files") or [])
        raise UsageError(f"{out} holds a previous {kind} ({count} files); --force replaces it (they are deleted), "
                         f"or choose another directory.")
