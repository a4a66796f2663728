"""Artifact directories: `manifest.json`, atomic writes, locks, and checked reads (docs/design.md, Artifacts).

A stage writes into a temporary sibling directory, fsyncs every file, writes the manifest last and
`os.replace`s the directory into place, so a crash never leaves a half-written artifact under the
final name. Readers check the kind, the schema version, that every listed path stays inside the
artifact, and the sha256 of every file they load.

Locks on outputs and the recovery of what a killed writer left are in `locks.py`; the atomic
rename itself in `atomic.py`.

Example:
    bgeprune prune runs/smoke/masks      # reads runs/smoke/masks/manifest.json, writes runs/smoke/pruned
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from . import __version__
from .atomic import atomic_dir, atomic_file, fsync_path, probe_writable
from .errors import ArtifactError, BgepruneError, UsageError, environment_error, os_error_in
from .filenames import MANIFEST
from .outputs import check_output
from .published import PublicPaths, resolve_recorded

SCHEMA_VERSION = 1

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
# kind -> the command that makes it inside run directory {run}
MAKE_IN_RUN = {"train-run": "bgeprune train RECIPE --run-dir {run}", "masks": "bgeprune finalize-masks {run}/train",
               "pruned-model": "bgeprune prune {run}/masks"}

# schema_version N -> function turning a version-N manifest into version N+1. Empty until the
# schema first changes; older manifests are migrated explicitly, never guessed at.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def hash_file_into(digest, path: Path) -> None:
    """Feed a file's bytes to `digest` in 1 MiB chunks (never the whole file in memory)."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    hash_file_into(digest, path)
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


# ---------------------------------------------------------------- untrusted paths


def unsafe_member_reason(root: Path, relative) -> str | None:
    """Why `relative` (read from a file we did not write) is not a plain path inside `root`, or None.

    Refused: non-strings, empty, absolute paths, `..` anywhere, backslashes and NUL bytes, and paths
    whose real location (symlinks followed) is outside `root`.
    """
    if not isinstance(relative, str) or not relative or "\0" in relative or "\\" in relative:
        return "is not a plain relative path"
    pure = PurePosixPath(relative)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", relative):
        return "is an absolute path"
    if ".." in pure.parts:
        return "climbs out with '..'"
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, relative))
    if real != real_root and not real.startswith(real_root + os.sep):
        return "leads outside the directory (through a symlink)"
    return None


def _check_manifest_entries(manifest_path: Path, root: Path, manifest: dict) -> None:
    """Every `files` entry: a safe relative path, a sha256 and a size; every `inputs` entry well-formed (a
    path, or in an export where no relative path meant anything only a name; published.py)."""
    files = manifest["files"]
    if not isinstance(files, list):
        raise ArtifactError(f"{manifest_path} is corrupt: 'files' is not a list; re-run the stage that wrote it.")
    for number, entry in enumerate(files):
        where = f"{manifest_path}: files[{number}]"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where} is not an object; the manifest is corrupt or tampered with.")
        reason = unsafe_member_reason(root, entry.get("path"))
        if reason:
            raise ArtifactError(f"{where}: path {entry.get('path')!r} {reason}; an artifact only lists files "
                                f"inside itself, so this manifest was tampered with. Nothing was read; re-run "
                                f"the stage that wrote it.")
        sha, size = entry.get("sha256"), entry.get("size")
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)) or not isinstance(size, int) or size < 0:
            raise ArtifactError(f"{where} ({entry['path']}) has no valid sha256 and size; the manifest is corrupt "
                                f"or tampered with. Re-run the stage that wrote it.")
    for number, entry in enumerate(manifest.get("inputs") or []):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("kind", "manifest_sha256"))
                and isinstance(entry.get("path", entry.get("name")), str)):
            raise ArtifactError(f"{manifest_path}: inputs[{number}] needs path (or name), kind and manifest_sha256 "
                                f"strings; the manifest is corrupt or tampered with.")


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
        if unsafe_member_reason(self.path, name):  # entries were checked on read; `name` is the caller's
            raise ArtifactError(f"{self.path}: {name!r} is not a file inside the artifact.")
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
        """The parent artifact of `kind`, checked against the manifest hash recorded at write time. A relative
        path (an export's) is relative to this artifact's directory."""
        for entry in self.manifest.get("inputs", []):
            if entry["kind"] == kind:
                if "path" not in entry:
                    raise ArtifactError(f"{self.path}/{MANIFEST} records its '{kind}' input only by name "
                                        f"({entry['name']!r}: no relative path led there when it was written); "
                                        f"pass that artifact itself.")
                parent = read_artifact(resolve_recorded(entry["path"], self.path), kind)
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
        done = [sub for sub in RUN_SUBDIRS.values() if (path / sub / MANIFEST).is_file()]
        missing = next((k for k in kinds if k in MAKE_IN_RUN), None)
        if done and missing:  # a run directory one stage short
            raise ArtifactError(f"{path} is a run directory without {RUN_SUBDIRS[missing]}/ yet (it holds "
                                f"{', '.join(d + '/' for d in done)}); {who} {wanted}: run "
                                f"'{MAKE_IN_RUN[missing].format(run=path)}' first.")
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
    _check_manifest_entries(manifest_path, path, manifest)
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


def ensure_writable(out: Path, force: bool, kind: str, reads: Iterable[Artifact | Path] = ()) -> None:
    """Refuse an output that is not a directory, that would destroy what the stage reads (or its lineage),
    or that holds anything but a previous `kind` output (that one only with `force`; outputs.py), and find
    out now (not after the work) whether the location can be written at all. Call before any heavy work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory; choose another output path.")
    check_output(out, force, kind, [r.path if isinstance(r, Artifact) else Path(r) for r in reads])
    probe_writable(out.parent)


def file_entries(root: Path) -> list[dict]:
    """sha256 and size of every file under `root` (the manifest excluded), sorted by path."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        fsync_path(path)
        entries.append({"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size})
    return entries


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def write_artifact(out: str | Path, kind: str, *, force: bool = False, recipe: dict | None = None,
                   recipe_sha256: str | None = None, inputs: list[Artifact] = (),
                   info: dict | None = None, paths: PublicPaths | None = None) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes `out`, manifest written last.

    `paths` (an export's): argv, the recipe and the inputs are recorded without absolute local paths
    (published.py); recipe_sha256 stays the one given, the run's. Without it they are recorded as they are.

    On any exception (Ctrl-C and SIGTERM too) the temporary directory is removed and `out` is left
    as it was (atomic.atomic_dir); an OS error (full disk, read-only) becomes an EnvironmentProblem
    naming `out`. `info` may be updated by the caller inside the block (it is read at commit time).
    """
    out = Path(out)
    ensure_writable(out, force, kind, inputs)
    info = info if info is not None else {}
    try:
        with atomic_dir(out) as tmp:
            yield tmp
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "kind": kind,
                "bgeprune_version": __version__,
                "created_unix": int(time.time()),
                "versions": library_versions(),
                "argv": paths.argv(sys.argv) if paths else list(sys.argv),
                "recipe": paths.recipe(recipe) if paths else recipe,
                "recipe_sha256": recipe_sha256,
                "inputs": [{**(paths.artifact(a.path) if paths else {"path": str(a.path.resolve())}), "kind": a.kind,
                            "manifest_sha256": a.manifest_sha256} for a in inputs],
                "files": file_entries(tmp),
                "info": info,
            }
            write_json(tmp / MANIFEST, manifest)
            fsync_path(tmp / MANIFEST)
    except Exception as exc:
        error = os_error_in(exc) if not isinstance(exc, BgepruneError) else None
        if error is not None:
            raise environment_error(error, f"writing {out}") from exc
        raise


def amend_manifest(artifact: Artifact, subdir: str, info: dict, argv: list[str] | None = None) -> Artifact:
    """Re-list the files under `subdir/` of a finished artifact (or the one file `subdir` names), merge
    `info`, and replace its manifest atomically.

    For a stage that adds or rewrites a part of an artifact another stage wrote (`export-onnx` adds
    `onnx/` to an export, `card` rewrites its README.md). Every other entry is kept exactly as recorded,
    never re-hashed, so a file changed since it was written still fails its check. The amendment (argv,
    time, version) is recorded beside the original write (`argv`: the command line as the caller wants
    it recorded, default sys.argv). The caller holds the artifact's lock.
    """
    part = artifact.path / subdir
    if part.is_file():
        prefix = subdir
        kept = [e for e in artifact.manifest["files"] if e["path"] != subdir]
        fsync_path(part)
        added = [{"path": subdir, "sha256": sha256_file(part), "size": part.stat().st_size}]
    else:
        prefix = subdir.rstrip("/") + "/"
        kept = [e for e in artifact.manifest["files"] if not e["path"].startswith(prefix)]
        added = [{**e, "path": prefix + e["path"]} for e in file_entries(part)] if part.is_dir() else []
    record = {"argv": list(sys.argv) if argv is None else argv, "created_unix": int(time.time()),
              "bgeprune_version": __version__, "versions": library_versions(), "part": prefix}
    manifest = {**artifact.manifest, "files": sorted(kept + added, key=lambda e: e["path"]),
                "info": {**artifact.info, **info}, "amended": [*artifact.manifest.get("amended", []), record]}
    with atomic_file(artifact.path / MANIFEST) as tmp:
        write_json(tmp, manifest)
    return read_artifact(artifact.path, artifact.kind)
