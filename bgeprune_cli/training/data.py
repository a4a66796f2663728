"""Training data files for `bgeprune train`: find them, check them, index them in one streaming pass.

`data.train` is unlabeled text for distillation: `.txt` (one passage per line) or JSON Lines with
`{"text": ...}` or `{"query", "pos", "neg"}` records (every string is a text). `data.pairs` is
FlagEmbedding JSONL, `{"query": str, "pos": [str, ...], "neg": [str, ...]}` (`neg` optional).
`data.translations` holds translation pairs: JSONL with two fields (`data.translation_fields`,
`{"en": ..., "xx": ...}` by default) or TSV, `source<TAB>translation[<TAB>...]`, the form parallel
corpora (OPUS, Tatoeba, sentence-transformers' parallel-sentences) ship in.
Files are never loaded whole: the index keeps 16 bytes per item (file, line offset, item on the
line) and items are re-read from disk on demand. Every problem names its file and line, and all
problems are reported together in one `DataError`. No tokenizer here; the trainer tokenizes.
Shuffled, resumable batches over an index are `batches.Batches`.

Example:
    with open_data(["/data/wiki/**/*.txt"], "text", "data.train") as index:
        print(len(index), index.text(0))
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Callable, Literal

from ..errors import DataError
from .passages import PassageCutter, line_number

Kind = Literal["text", "pairs", "translations"]
SUFFIXES = (".txt", ".jsonl", ".json")
JSONL_SUFFIXES = (".jsonl", ".json")
TSV_SUFFIX = ".tsv"
TRANSLATION_SUFFIXES = (*JSONL_SUFFIXES, TSV_SUFFIX)
DEFAULT_FIELDS = ("en", "xx")
MAX_LISTED = 20
BOM = "\ufeff"


class _Problems:
    """Collects problems; keeps only the first few strings so a huge bad file cannot eat memory."""

    def __init__(self):
        self.listed: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(message)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        lines = self.listed + ([f"... and {self.count - MAX_LISTED} more"] if self.count > MAX_LISTED else [])
        error = DataError(f"training data has {self.count} problem{'s' * (self.count != 1)}:\n  "
                          + "\n  ".join(lines))
        error.problems = self.listed
        raise error


class _BadLine(ValueError):
    """One line that cannot be used; the message says what is wrong and what to do."""


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _strings(value, field: str, required: bool) -> list[str]:
    """`pos`/`neg` may be one string or a list of strings; every string must have text in it."""
    if value is None and not required:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items) \
            or (required and not items):
        raise _BadLine(f'"{field}" must be a non-empty string or a non-empty list of non-empty strings, '
                       f"got {_json_type(value)}; fix or remove the line")
    return items


def _pair(obj, need_pos: bool) -> dict:
    query = obj.get("query")
    if not (isinstance(query, str) and query.strip()):
        raise _BadLine(f'"query" must be a non-empty string, got {_json_type(query)}; fix or remove the line')
    return {"query": query, "pos": _strings(obj.get("pos"), "pos", need_pos),
            "neg": _strings(obj.get("neg"), "neg", False)}


def _translation(line: str, jsonl: bool, fields: tuple[str, str]) -> tuple[str, str]:
    if not jsonl:
        columns = line.split("\t")
        if len(columns) < 2 or not (columns[0].strip() and columns[1].strip()):
            raise _BadLine("expected a source and its translation separated by a tab, both non-empty; "
                           "fix or remove the line")
        return columns[0], columns[1]
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _BadLine(f"not valid JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object with {fields[0]!r} and {fields[1]!r}, got {_json_type(obj)}; "
                       "fix or remove the line")
    for name in fields:
        if not (isinstance(obj.get(name), str) and obj[name].strip()):
            raise _BadLine(f'"{name}" must be a non-empty string, got {_json_type(obj.get(name))}; fix or remove '
                           f"the line, or name the fields with data.translation_fields")
    return obj[fields[0]], obj[fields[1]]


def _parse(raw: bytes, at_start: bool, jsonl: bool, kind: str, fields: tuple[str, str] = DEFAULT_FIELDS) -> list:
    """The items on one line: texts (text kind), one pair dict (pairs kind) or one (source, translation)
    (translations kind); [] for a blank line.

    Used both when indexing and when reading back, so the two can never disagree.
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine(f"not valid UTF-8 (bad byte at position {e.start + 1} of the line); "
                       "re-save the file as UTF-8 or remove the line") from None
    if at_start:  # editors on Windows often write a byte-order mark; it is not part of the text
        line = line.removeprefix(BOM)
    line = line.removesuffix("\n").removesuffix("\r")
    if not line.strip():
        return []
    if kind == "translations":
        return [_translation(line, jsonl, fields)]
    if not jsonl:
        return [line]
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _BadLine(f"not valid JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
    if kind == "pairs":
        if not isinstance(obj, dict):
            raise _BadLine(f'expected a JSON object with "query" and "pos", got {_json_type(obj)}; '
                           "fix or remove the line")
        return [_pair(obj, need_pos=True)]
    if isinstance(obj, dict) and "text" in obj:
        if not (isinstance(obj["text"], str) and obj["text"].strip()):
            raise _BadLine(f'"text" must be a non-empty string, got {_json_type(obj["text"])}; fix or remove the line')
        return [obj["text"]]
    if isinstance(obj, dict) and "query" in obj:
        pair = _pair(obj, need_pos=False)
        return [pair["query"], *pair["pos"], *pair["neg"]]
    raise _BadLine(f'expected {{"text": ...}} or {{"query": ..., "pos": [...]}}, got {_json_type(obj)}'
                   f"{' without either key' if isinstance(obj, dict) else ''}; fix or remove the line")


def _expand(patterns: list[str], key: str, problems: _Problems, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    seen: set[str] = set()
    out: list[Path] = []
    for entry in patterns:
        if os.path.isdir(entry):
            # Hidden files and folders (.git, .ipynb_checkpoints) are skipped, as glob skips them.
            found = sorted(p for p in Path(entry).rglob("*") if p.suffix.lower() in suffixes and p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(entry).parts))
            if not found:
                listed = f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"
                problems.add(f"{key}: '{entry}' is a directory with no {listed} file in it; "
                             "add data or list the files directly")
        elif os.path.isfile(entry):  # a literal name may contain glob characters, e.g. "part[1].txt"
            found = [Path(entry)]
        else:
            found = [Path(p) for p in sorted(glob.glob(entry, recursive=True)) if os.path.isfile(p)]
            if not found:
                problems.add(f"{key}: '{entry}' matches no file; check the path or pattern, or name data you "
                             f"have with --set {key}='[\"/path/to/your/data\"]' (files, directories or globs)")
        for path in found:
            real = os.path.realpath(path)  # the same file through two entries (or a symlink) counts once
            if real not in seen:
                seen.add(real)
                out.append(path)
    return out


PACKAGED_PROBE = "builtin:probe"  # the probe text packaged with bgeprune, as training or corpus data


def with_packaged(patterns: list[str]) -> list[str]:
    """`patterns` with "builtin:probe" replaced by the packaged probe text's path (offline, always there)."""
    from ..models.probe import PROBE_TEXT

    return [str(PROBE_TEXT) if p == PACKAGED_PROBE else p for p in patterns]


def expand_sources(patterns: list[str], key: str, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """Files named by `patterns` (files, directories searched recursively for `suffixes`, globs),
    de-duplicated, in order."""
    problems = _Problems()
    paths = _expand(patterns, key, problems, suffixes)
    problems.raise_if_any()
    return paths


class DataIndex:
    """Where every item lives on disk; items are read back by seeking, one line at a time."""

    def __init__(self, kind: str, key: str, files: list[Path], file_sha256: list[str], file_bytes: list[int],
                 file_no: array, offsets: array, sub: array, fields: tuple[str, str] = DEFAULT_FIELDS):
        self.kind, self.key, self.fields = kind, key, fields
        self.files, self.file_sha256, self.file_bytes = files, file_sha256, file_bytes
        self._file_no, self._offsets, self._sub = file_no, offsets, sub
        self._handles: dict[int, object] = {}
        self.cutter: PassageCutter | None = None  # set by `cut_passages`
        digest = hashlib.sha256(f"{kind}\n".encode())
        if kind == "translations":  # other fields of the same files are other pairs
            digest.update(f"{fields[0]}\t{fields[1]}\n".encode())
        for path, sha in zip(files, file_sha256):
            digest.update(f"{path}\t{sha}\n".encode())
        self.fingerprint = digest.hexdigest()

    def __len__(self) -> int:
        return len(self._offsets)

    def summary(self) -> dict:
        return {"files": len(self.files), "items": len(self), "bytes": sum(self.file_bytes)}

    def cut_passages(self, max_length: int, warn: Callable[[str], None]) -> None:
        """From now on every text read back is cut for `max_length` tokens (see `passage_limit`)."""
        self.cutter = PassageCutter(max_length, warn)

    def _cut(self, item, number: int, offset: int):
        if self.cutter is None:
            return item
        path = self.files[number]

        def where() -> str:  # only called for the one warning: counting lines reads the file up to here
            return f"{self.key}: {path}:{line_number(path, offset)}"

        if isinstance(item, str):
            return self.cutter(item, where)
        if isinstance(item, tuple):
            return self.cutter(item[0], where), self.cutter(item[1], where)
        return {"query": self.cutter(item["query"], where), "pos": [self.cutter(t, where) for t in item["pos"]],
                "neg": [self.cutter(t, where) for t in item["neg"]]}

    def _item(self, i: int, kind: str):
        if self.kind != kind:
            raise ValueError(f"this index holds {self.kind} items, not {kind}")
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range (0..{len(self) - 1})")
        number, offset = self._file_no[i], self._offsets[i]
        path = self.files[number]
        try:
            if number not in self._handles:  # opened on first use, kept open until close()
                self._handles[number] = open(path, "rb")
            handle = self._handles[number]
            handle.seek(offset)
            item = _parse(handle.readline(), offset == 0, path.suffix.lower() in JSONL_SUFFIXES, kind,
                          self.fields)[self._sub[i]]
        except (_BadLine, IndexError, OSError) as e:
            raise DataError(f"{self.key}: {path}: changed or gone since it was indexed ({e}); keep data files "
                            "unchanged during a run and start again") from None
        return self._cut(item, number, offset)

    def text(self, i: int) -> str:
        return self._item(i, "text")

    def pair(self, i: int) -> dict:
        """{"query": str, "pos": [str, ...], "neg": [str, ...]}; `neg` may be empty."""
        return self._item(i, "pairs")

    def translation(self, i: int) -> tuple[str, str]:
        """(source, translation)."""
        return self._item(i, "translations")

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> DataIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _scan(paths: list[Path], kind: str, key: str, problems: _Problems,
          fields: tuple[str, str] = DEFAULT_FIELDS) -> DataIndex:
    files, shas, sizes = [], [], []
    file_no, offsets, sub = array("i"), array("q"), array("i")
    for path in paths:
        jsonl = path.suffix.lower() in JSONL_SUFFIXES
        if kind == "pairs" and not jsonl:
            problems.add(f"{key}: {path}: pairs must be JSONL with query/pos/neg (a .jsonl file, one JSON object "
                         "per line); convert it, or move plain text to data.train")
            continue
        if kind == "translations" and path.suffix.lower() not in TRANSLATION_SUFFIXES:
            problems.add(f"{key}: {path}: translation pairs must be JSONL (one object with {fields[0]!r} and "
                         f"{fields[1]!r} per line) or TSV (a .tsv file: source<TAB>translation); convert it")
            continue
        number, start, bad_before = len(files), len(offsets), problems.count
        digest, offset = hashlib.sha256(), 0
        try:
            with open(path, "rb") as handle:
                # One pass over the bytes: validate, record offsets and hash. `tell()` is not allowed
                # while iterating a file, so the offset is counted from the line lengths.
                for lineno, raw in enumerate(handle, 1):
                    digest.update(raw)
                    try:
                        count = len(_parse(raw, offset == 0, jsonl, kind, fields))
                    except _BadLine as e:
                        problems.add(f"{key}: {path}:{lineno}: {e}")
                        count = 0
                    for j in range(count):
                        file_no.append(number)
                        offsets.append(offset)
                        sub.append(j)
                    offset += len(raw)
        except OSError as e:
            problems.add(f"{key}: {path}: cannot read it ({e.strerror or e}); check the path and its permissions")
            del file_no[start:], offsets[start:], sub[start:]
            continue
        if len(offsets) == start and problems.count == bad_before:
            problems.add(f"{key}: {path}: no text in it (empty file?); add text or remove it from {key}")
        files.append(path)
        shas.append(digest.hexdigest())
        sizes.append(offset)
    return DataIndex(kind, key, files, shas, sizes, file_no, offsets, sub, fields)


def build_index(paths: list[Path], kind: Kind, key: str) -> DataIndex:
    """Index `paths` in one streaming pass each; raises one DataError listing every bad file and line."""
    problems = _Problems()
    index = _scan(paths, kind, key, problems)
    problems.raise_if_any()
    return index


def open_data(patterns: list[str], kind: Kind, key: str, fields: tuple[str, str] = DEFAULT_FIELDS) -> DataIndex:
    """`expand_sources` + `build_index`, with the problems of both reported together (`fields`: a translation
    pair's JSONL fields)."""
    if not patterns:
        raise DataError(f"{key}: no data files listed; add files, directories or globs to {key} in the recipe")
    problems = _Problems()
    suffixes = TRANSLATION_SUFFIXES if kind == "translations" else SUFFIXES
    index = _scan(_expand(patterns, key, problems, suffixes), kind, key, problems, fields)
    problems.raise_if_any()
    return index
