"""What an export records in place of the build machine's paths (docs/publishing.md, What an export records).

An export directory is uploaded to the Hub as it is, so none of its files names an absolute local path.
The artifacts it came from are written relative to the export directory (`../runs/x/pruned`), beside the
manifest hashes that make them checkable; where no relative path means anything (another drive, or one
that would climb through the filesystem root or the directory that holds the home directories, and so
name them) only the name is kept, under `name` instead of `path`. A base model is its hub id or builtin
name as it was, a local base directory only its name. Data files in the recorded recipe and the path
arguments of `argv` follow the artifacts' rule (a data file by its file name where no relative path
means anything; `argv[0]` is the program's name). `export-hf --local-paths` keeps the absolute form
(`PublicPaths(out, local=True)` changes nothing).

Readers resolve a recorded path against the directory of the file that holds it (`resolve_recorded`):
an absolute path (an older export, or `--local-paths`) stays as it is.

Example:
    >>> PublicPaths(Path("/srv/work/out/x")).artifact(Path("/srv/work/runs/x/pruned"))
    {'path': '../../runs/x/pruned'}
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

_DATA_KEYS = ("train", "pairs", "translations")  # data.* lists of local files, directories or globs
_QUOTED_PATH = re.compile(r"""(["'])(/[^"']*)\1""")


def resolve_recorded(value: str, directory: Path) -> Path:
    """A path read from a manifest or lineage.json: relative ones are relative to `directory` (the file's), as
    its real location (they were written from there: `relative_path`)."""
    path = Path(value)
    return path if path.is_absolute() else Path(os.path.normpath(os.path.join(os.path.realpath(directory), path)))


def _home_ancestors() -> set[Path]:
    try:
        home = Path(os.path.realpath(Path.home()))
    except (RuntimeError, KeyError):  # no home directory known: only the root is excluded
        return set()
    return set(home.parents)


def relative_path(path: str | Path, start: str | Path) -> str | None:
    """`path` relative to the directory `start` (POSIX separators), or None where that means nothing or
    names what it should not: another drive, or a common ancestor that is the filesystem root or above
    the home directory (`../../home/alice/...` would name the user)."""
    target, origin = os.path.realpath(path), os.path.realpath(start)
    try:
        common = Path(os.path.commonpath([target, origin]))
        relative = os.path.relpath(target, origin)
    except ValueError:  # different drives
        return None
    if common == Path(common.anchor) or common in _home_ancestors():
        return None
    return PurePath(relative).as_posix()


def _is_local(value: str) -> bool:
    return os.path.isabs(os.path.expanduser(value)) or Path(value).exists()


@dataclass(frozen=True)
class PublicPaths:
    """How the files of the export at `export` (its final location) name local paths."""

    export: Path
    local: bool = False  # export-hf --local-paths: absolute paths, as before

    def artifact(self, path: Path) -> dict:
        """{'path': relative to the export} or, where that means nothing, {'name': the directory's name}."""
        absolute = str(Path(path).resolve())
        if self.local:
            return {"path": absolute}
        relative = relative_path(absolute, self.export)
        return {"path": relative} if relative is not None else {"name": Path(absolute).name}

    def shown(self, given: Path) -> str:
        """The export as the model card's snippets load it: as `export-hf` was given it when that was a relative
        path, else relative to the working directory when inside it, else by its name."""
        if self.local or not given.is_absolute():
            return str(given)
        relative = relative_path(given, Path.cwd())
        return relative if relative is not None and not relative.startswith("..") else given.name

    def file(self, value: str) -> str:
        """A local file (or directory, or glob) named in a recipe: relative to the export, else its name.
        Values that are not absolute paths (a hub id, `builtin:probe`, a path the recipe left relative)
        are kept."""
        if self.local or value.startswith("builtin:") or not os.path.isabs(os.path.expanduser(value)):
            return value
        relative = relative_path(os.path.expanduser(value), self.export)
        return relative if relative is not None else PurePath(value).name

    def base(self, model: str) -> str:
        """base.model: a hub id or builtin name as it is; a local directory by its name only."""
        if self.local or model.startswith("builtin:") or not _is_local(model):
            return model
        return Path(os.path.expanduser(model)).resolve().name

    def argv(self, argv: list[str]) -> list[str]:
        """The command line with every absolute path (also after `--opt=` or in `--set key=value`) written
        as `file` writes it, and the program by its name."""
        if self.local:
            return list(argv)
        return [Path(argv[0]).name, *(self._arg(arg) for arg in argv[1:])] if argv else []

    def _arg(self, arg: str) -> str:
        if os.path.isabs(arg):
            return self.file(arg)
        at = arg.find("=")
        while at != -1:  # --out=/x, key=/x, --set=key=/x
            if os.path.isabs(arg[at + 1:]):
                return arg[:at + 1] + self.file(arg[at + 1:])
            at = arg.find("=", at + 1)
        # quoted paths inside a value: --set 'data.train=["/x/a.txt"]'
        return _QUOTED_PATH.sub(lambda m: m[1] + self.file(m[2]) + m[1], arg)

    def recipe(self, recipe: dict | None) -> dict | None:
        """The resolved recipe with its base and data paths published (its recipe_sha256 stays the run's:
        the hash of the recipe as it was resolved, which the run's manifests record too)."""
        if recipe is None or self.local:
            return recipe
        recipe = copy.deepcopy(recipe)
        base = recipe.get("base") or {}
        if isinstance(base.get("model"), str):
            base["model"] = self.base(base["model"])
        run = recipe.get("run") or {}
        if isinstance(run.get("dir"), str):
            run["dir"] = self.file(run["dir"])
        data = recipe.get("data") or {}
        for key in (k for k in _DATA_KEYS if k in data):
            data[key] = self._files(data[key])
        streams = data.get("stream")
        for source in [streams] if isinstance(streams, dict) else streams or []:
            if isinstance(source, dict):
                source["data_files"] = self._files(source.get("data_files"))
                if isinstance(source.get("dataset"), str):
                    source["dataset"] = self.file(source["dataset"])
        vocab = recipe.get("vocab")
        if isinstance(vocab, dict):
            vocab["corpus"] = self._files(vocab.get("corpus"))
        return recipe

    def vocab(self, vocab: dict | None) -> dict | None:
        """masks' vocab summary, its corpus files published (`data.stream: NAME` entries kept)."""
        if vocab is None or self.local or not isinstance((vocab.get("corpus") or {}).get("files"), list):
            return vocab
        corpus = vocab["corpus"]
        return {**vocab, "corpus": {**corpus, "files": self._files(corpus["files"])}}

    def data_summary(self, summary: dict | None) -> dict | None:
        """A train-run's data summary (what the card names) with local dataset paths published."""
        if not isinstance(summary, dict) or self.local:
            return summary
        published = {}
        for key, part in summary.items():
            if isinstance(part, dict):
                part = {**part, **({"dataset": self.file(part["dataset"])} if isinstance(part.get("dataset"), str)
                                   else {})}
                if isinstance(part.get("datasets"), list):
                    part["datasets"] = [{**d, "dataset": self.file(d["dataset"])}
                                        if isinstance(d, dict) and isinstance(d.get("dataset"), str) else d
                                        for d in part["datasets"]]
            published[key] = part
        return published

    def _files(self, values):
        if not isinstance(values, list):
            return values
        return [self.file(v) if isinstance(v, str) else v for v in values]
