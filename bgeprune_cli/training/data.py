"""Training data for `bgeprune train`: find the files, index them in one streaming pass, serve batches.

`data.train` is unlabeled text for distillation: `.txt` (one passage per line) or JSON Lines with
`{"text": ...}` or `{"query", "pos", "neg"}` records (every string is a text). `data.pairs` is
FlagEmbedding JSONL, `{"query": str, "pos": [str, ...], "neg": [str, ...]}` (`neg` optional).
Files are never loaded whole: the index keeps 16 bytes per item (file, line offset, item on the
line) and items are re-read from disk on demand. Every problem names its file and line, and all
problems are reported together in one `DataError`. No tokenizer here; the trainer tokenizes.

Example:
    with open_data(["/data/wiki/**/*.txt"], "text", "data.train") as index:
        batches = Batches(index, batch_size=32, seed=0); texts = batches.next_texts()
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
from array import array
from pathlib import Path
from typing import Callable, Literal, Protocol

import torch

from ..errors import DataError

SUFFIXES = (".txt", ".jsonl", ".json")
CHARS_PER_TOKEN = 32  # passages are cut to this many characters per token of data.max_length (see cut_passage)
JSONL_SUFFIXES = (".jsonl", ".json")
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


def _parse(raw: bytes, at_start: bool, jsonl: bool, kind: str) -> list:
    """The items on one line: texts (text kind) or one pair dict (pairs kind); [] for a blank line.

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


def _expand(patterns: list[str], key: str, problems: _Problems) -> list[Path]:
    seen: set[str] = set()
    out: list[Path] = []
    for entry in patterns:
        if os.path.isdir(entry):
            # Hidden files and folders (.git, .ipynb_checkpoints) are skipped, as glob skips them.
            found = sorted(p for p in Path(entry).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(entry).parts))
            if not found:
                problems.add(f"{key}: '{entry}' is a directory with no .txt, .jsonl or .json file in it; "
                             "add data or list the files directly")
        elif os.path.isfile(entry):  # a literal name may contain glob characters, e.g. "part[1].txt"
            found = [Path(entry)]
        else:
            found = [Path(p) for p in sorted(glob.glob(entry, recursive=True)) if os.path.isfile(p)]
            if not found:
                problems.add(f"{key}: '{entry}' matches no file; check the path or pattern")
        for path in found:
            real = os.path.realpath(path)  # the same file through two entries (or a symlink) counts once
            if real not in seen:
                seen.add(real)
                out.append(path)
    return out


def expand_sources(patterns: list[str], key: str) -> list[Path]:
    """Files named by `patterns` (files, directories searched recursively, globs), de-duplicated, in order."""
    problems = _Problems()
    paths = _expand(patterns, key, problems)
    problems.raise_if_any()
    return paths


def passage_limit(max_length: int) -> int:
    """Characters of a passage worth tokenizing for `max_length` tokens.

    Tokenizers read a whole passage before truncating, so one 10 MB line costs minutes per step.
    SentencePiece pieces are at most 16 characters and WordPiece words become one [UNK] past 100, so
    32 characters per token keeps every token that truncation keeps, for any natural text.
    """
    return max(1024, CHARS_PER_TOKEN * max_length)


def cut_passage(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at a whitespace in its last quarter when there is one
    (so no word is split)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(c, limit * 3 // 4, limit) for c in " \t\n")
    return text[:cut if cut > 0 else limit]


class PassageCutter:
    """Cuts passages for one data source and warns once, naming where the first long one was."""

    def __init__(self, max_length: int, warn: Callable[[str], None]):
        self.max_length, self.limit, self.warn, self.cut = max_length, passage_limit(max_length), warn, 0

    def __call__(self, text: str, where: Callable[[], str]) -> str:
        if len(text) <= self.limit:
            return text
        self.cut += 1
        if self.cut == 1:
            self.warn(f"{where()}: a passage of {len(text):,} characters was cut to {self.limit:,} before tokenizing "
                      f"(enough for data.max_length = {self.max_length} tokens); later long passages are cut "
                      f"without a message")
        return cut_passage(text, self.limit)


def _line_number(path: Path, offset: int) -> int:
    """1-based number of the line that starts at byte `offset` (for messages only: reads up to it)."""
    with open(path, "rb") as handle:
        line, remaining = 1, offset
        while remaining > 0:
            chunk = handle.read(min(remaining, 1 << 20))
            if not chunk:
                break
            line += chunk.count(b"\n")
            remaining -= len(chunk)
    return line


class DataIndex:
    """Where every item lives on disk; items are read back by seeking, one line at a time."""

    def __init__(self, kind: str, key: str, files: list[Path], file_sha256: list[str], file_bytes: list[int],
                 file_no: array, offsets: array, sub: array):
        self.kind, self.key = kind, key
        self.files, self.file_sha256, self.file_bytes = files, file_sha256, file_bytes
        self._file_no, self._offsets, self._sub = file_no, offsets, sub
        self._handles: dict[int, object] = {}
        self.cutter: PassageCutter | None = None  # set by `cut_passages`
        digest = hashlib.sha256(f"{kind}\n".encode())
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
            return f"{self.key}: {path}:{_line_number(path, offset)}"

        if isinstance(item, str):
            return self.cutter(item, where)
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
            item = _parse(handle.readline(), offset == 0, path.suffix.lower() in JSONL_SUFFIXES, kind)[self._sub[i]]
        except (_BadLine, IndexError, OSError) as e:
            raise DataError(f"{self.key}: {path}: changed or gone since it was indexed ({e}); keep data files "
                            "unchanged during a run and start again") from None
        return self._cut(item, number, offset)

    def text(self, i: int) -> str:
        return self._item(i, "text")

    def pair(self, i: int) -> dict:
        """{"query": str, "pos": [str, ...], "neg": [str, ...]}; `neg` may be empty."""
        return self._item(i, "pairs")

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> DataIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _scan(paths: list[Path], kind: str, key: str, problems: _Problems) -> DataIndex:
    files, shas, sizes = [], [], []
    file_no, offsets, sub = array("i"), array("q"), array("i")
    for path in paths:
        jsonl = path.suffix.lower() in JSONL_SUFFIXES
        if kind == "pairs" and not jsonl:
            problems.add(f"{key}: {path}: pairs must be JSONL with query/pos/neg (a .jsonl file, one JSON object "
                         "per line); convert it, or move plain text to data.train")
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
                        count = len(_parse(raw, offset == 0, jsonl, kind))
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
    return DataIndex(kind, key, files, shas, sizes, file_no, offsets, sub)


def build_index(paths: list[Path], kind: Literal["text", "pairs"], key: str) -> DataIndex:
    """Index `paths` in one streaming pass each; raises one DataError listing every bad file and line."""
    problems = _Problems()
    index = _scan(paths, kind, key, problems)
    problems.raise_if_any()
    return index


def open_data(patterns: list[str], kind: Literal["text", "pairs"], key: str) -> DataIndex:
    """`expand_sources` + `build_index`, with the problems of both reported together."""
    if not patterns:
        raise DataError(f"{key}: no data files listed; add files, directories or globs to {key} in the recipe")
    problems = _Problems()
    index = _scan(_expand(patterns, key, problems), kind, key, problems)
    problems.raise_if_any()
    return index


class TextSource(Protocol):
    """What training needs of its text stream; `Batches` (indexed files) and `StreamBatches` (a streamed
    dataset) are both one, so the trainer never asks which it has."""

    fingerprint: str

    def local_share(self, micro_size: int, local: range) -> list: ...

    def cut_passages(self, max_length: int, warn: Callable[[str], None]) -> None: ...

    def summary(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Batches:
    """A deterministic, resumable shuffled stream of batches over a `DataIndex`.

    Epoch e is `randperm(len(index))` seeded with `seed * 1_000_003 + e`; only the current epoch's
    permutation is held. A batch that reaches the end of an epoch continues into the next one, so
    every batch is full even when the data is smaller than a batch.
    """

    def __init__(self, index: DataIndex, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(index) == 0:
            raise DataError(f"{index.key}: no items to train on; add data to {index.key}")
        self.index, self.batch_size, self.seed = index, batch_size, seed
        self.epoch = self.position = 0
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None or self._perm[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = (self.epoch, torch.randperm(len(self.index), generator=generator))
        return self._perm[1]

    def take(self) -> list[tuple[int, int, int]]:
        """The next batch as (epoch, position, item) triples, without reading it; advances the stream.

        Every rank of a distributed run takes the same batch and reads only its share (`texts_of`).
        """
        out: list[tuple[int, int, int]] = []
        while len(out) < self.batch_size:
            perm = self._permutation()
            stop = min(len(perm), self.position + self.batch_size - len(out))
            items = perm[self.position:stop].tolist()
            out += [(self.epoch, self.position + k, item) for k, item in enumerate(items)]
            self.epoch, self.position = (self.epoch + 1, 0) if stop == len(perm) else (self.epoch, stop)
        return out

    def next_texts(self) -> list[str]:
        return self.texts_of(self.take())

    def cut_passages(self, max_length: int, warn: Callable[[str], None]) -> None:
        self.index.cut_passages(max_length, warn)

    def local_share(self, micro_size: int, local: range) -> list:
        """This rank's micro-batches of the next global batch: texts, or (queries, positives, negatives).

        Every rank takes the same batch and reads only its own share from disk.
        """
        entries = self.take()
        read = self.texts_of if self.index.kind == "text" else self.pairs_of
        return [read(entries[i * micro_size:(i + 1) * micro_size]) for i in local]

    def texts_of(self, entries: list[tuple[int, int, int]]) -> list[str]:
        return [self.index.text(item) for _, _, item in entries]

    def next_pairs(self) -> tuple[list[str], list[str], list[str]]:
        return self.pairs_of(self.take())

    def pairs_of(self, entries: list[tuple[int, int, int]]) -> tuple[list[str], list[str], list[str]]:
        """(queries, positives, negatives): one positive per record, and one negative per record that has any.

        `negatives` is not aligned with `queries` (records without `neg` add none): use it as extra
        in-batch negatives. The choices depend only on (seed, epoch, position), so a resumed stream
        picks the same passages.
        """
        queries, positives, negatives = [], [], []
        for epoch, position, item in entries:
            record = self.index.pair(item)
            rng = random.Random(f"{self.seed}:{epoch}:{position}")  # str seeds hash the same in every process
            queries.append(record["query"])
            positives.append(rng.choice(record["pos"]))
            if record["neg"]:
                negatives.append(rng.choice(record["neg"]))
        return queries, positives, negatives

    @property
    def fingerprint(self) -> str:
        return self.index.fingerprint

    def summary(self) -> dict:
        return self.index.summary()

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.position / len(self.index)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "fingerprint": self.index.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` left off, under its seed (which defines the shuffle the position is in).

        The batch size stays the caller's: a resume forced through a changed recipe uses the new one.
        """
        key = self.index.key
        if state.get("fingerprint") != self.index.fingerprint:
            raise DataError(f"{key}: data changed since the checkpoint (files added, removed, moved or edited); "
                            "restore the original data or start a new run")
        if not (0 <= state["position"] < len(self.index) and state["epoch"] >= 0 and state["batch_size"] >= 1):
            raise DataError(f"{key}: checkpoint data position {state['epoch']}:{state['position']} is invalid; "
                            "start a new run")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.seed = int(state["seed"])
        self._perm = None
