"""Artifact directories: `manifest.json`, atomic writes, and checked reads (DESIGN.md §6).

A stage writes into a temporary sibling directory, fsyncs every file, writes the manifest last and
`os.replace`s the directory into place, so a crash never leaves a half-written artifact under the
final name. Readers check the kind, the schema version and the sha256 of every file they load.

Example:
    bgeprune prune runs/smoke/masks      # reads runs/smoke/masks/manifest.json, writes runs/smoke/pruned
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import __version__
from .errors import ArtifactError, UsageError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

# kind -> the command that produces it; used in error messages.
PRODUCERS = {
    "train-run": "bgeprune train (or bgeprune magnitude)",
    "masks": "bgeprune finalize-masks",
    "pruned-model": "bgeprune prune",
    "hf-model": "bgeprune export-hf",
    "verify-report": "bgeprune verify --report",
    "bench-report": "bgeprune bench",
    "checkpoint": "bgeprune train",
}
# kind -> its conventional directory inside a run directory (runs/NAME/train, ...).
RUN_SUBDIRS = {"train-run": "train", "masks": "masks", "pruned-model": "pruned"}

# schema_version N -> function turning a version-N manifest into version N+1. Empty until the
# schema first changes; older manifests are migrated explicitly, never guessed at.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "sentence_transformers", "safetensors", "tokenizers"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        versions[name] = getattr(module, "__version__", "unknown")
    return versions


# ---------------------------------------------------------------- reading


@dataclass
class Artifact:
    path: Path
    manifest: dict
    manifest_sha256: str

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def recipe(self) -> dict | None:
        return self.manifest.get("recipe")

    @property
    def info(self) -> dict:
        return self.manifest.get("info", {})

    def has_file(self, name: str) -> bool:
        return any(entry["path"] == name for entry in self.manifest["files"])

    def file(self, name: str) -> Path:
        """Path of a listed file, after checking its size and sha256 against the manifest."""
        entry = next((e for e in self.manifest["files"] if e["path"] == name), None)
        producer = PRODUCERS.get(self.kind, "the stage that wrote it")
        if entry is None:
            raise ArtifactError(f"{self.path}/{name} is not listed in {MANIFEST}; the artifact is incomplete. "
                                f"Re-run '{producer}'.")
        path = self.path / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing (listed in {MANIFEST}); re-run '{producer}' to recreate it.")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path} does not match the sha256 recorded in {MANIFEST}: it changed after it "
                                f"was written (tampered or corrupt). Re-run '{producer}' to recreate it.")
        return path

    def read_json(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def input(self, kind: str) -> "Artifact":
        """The parent artifact of `kind`, checked against the manifest hash recorded at write time."""
        for entry in self.manifest.get("inputs", []):
            if entry["kind"] == kind:
                parent = read_artifact(entry["path"], kind)
                if parent.manifest_sha256 != entry["manifest_sha256"]:
                    raise ArtifactError(
                        f"{parent.path} changed after {self.path} was made from it (manifest hash differs); "
                        f"re-run the later stages, or pass the artifact that matches.")
                return parent
        raise ArtifactError(f"{self.path}/{MANIFEST} records no '{kind}' input.")


def _locate(path: Path, kinds: tuple[str, ...]) -> Path:
    """Accept the artifact itself or a run directory holding it in its conventional subdir."""
    if (path / MANIFEST).is_file():
        return path
    for kind in kinds:
        sub = path / RUN_SUBDIRS.get(kind, "\0")
        if (sub / MANIFEST).is_file():
            return sub
    return path


def read_artifact(path: str | Path, *kinds: str, needed_by: str | None = None) -> Artifact:
    """Open an artifact directory, checking that it exists and is one of `kinds`."""
    path = _locate(Path(path), kinds)
    wanted = " or ".join(f"'{k}' (the output of '{PRODUCERS[k]}')" for k in kinds)
    who = f"'{needed_by}' needs" if needed_by else "expected"
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; {who} {wanted}.")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}, so it is not a bgeprune artifact; {who} {wanted}.")
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
        version = int(manifest["schema_version"])
        kind = manifest["kind"]
        manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path} is corrupt ({exc.__class__.__name__}: {exc}); "
                            f"re-run the stage that wrote it.") from None
    if kinds and kind not in kinds:
        raise ArtifactError(f"{manifest_path} has kind '{kind}'; {who} {wanted}.")
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"{manifest_path} has schema_version {version}, newer than this bgeprune "
                            f"({__version__}) understands ({SCHEMA_VERSION}); upgrade bgeprune.")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ArtifactError(f"{manifest_path} has schema_version {version} and no migration to "
                                f"{SCHEMA_VERSION} exists; re-run the stage that wrote it.")
        manifest = MIGRATIONS[version](manifest)
        version = manifest["schema_version"]
    return Artifact(path, manifest, hashlib.sha256(raw).hexdigest())


# ---------------------------------------------------------------- writing


def ensure_writable(out: Path, force: bool) -> None:
    """Refuse to replace a non-empty directory unless forced; call before any heavy work."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory; choose another output path.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} exists and is not empty; pass --force to replace it, or choose another directory.")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_entries(root: Path) -> list[dict]:
    """sha256 and size of every file under `root` (the manifest excluded), sorted by path."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        _fsync(path)
        entries.append({"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size})
    return entries


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def write_artifact(out: str | Path, kind: str, *, force: bool = False, recipe: dict | None = None,
                   recipe_sha256: str | None = None, inputs: list[Artifact] = (),
                   info: dict | None = None) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes `out`, manifest written last.

    On any exception the temporary directory is removed and `out` is left as it was.
    `info` may be updated by the caller inside the block (it is read at commit time).
    """
    out = Path(out)
    ensure_writable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    info = info if info is not None else {}
    try:
        yield tmp
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "bgeprune_version": __version__,
            "created_unix": int(time.time()),
            "versions": library_versions(),
            "argv": list(sys.argv),
            "recipe": recipe,
            "recipe_sha256": recipe_sha256,
            "inputs": [{"path": str(a.path.resolve()), "kind": a.kind, "manifest_sha256": a.manifest_sha256}
                       for a in inputs],
            "files": file_entries(tmp),
            "info": info,
        }
        write_json(tmp / MANIFEST, manifest)
        _fsync(tmp / MANIFEST)
        _fsync(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        os.replace(tmp, out)
        _fsync(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
