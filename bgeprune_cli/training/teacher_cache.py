"""Teacher cache: a frozen teacher's per-text outputs on disk, so later epochs and runs skip its forward pass.

Distillation runs the same frozen teacher over the same texts every epoch and in every run of a
sweep. Its outputs depend only on what `key` describes (teacher and tokenizer fingerprints,
max_length, fields, dtype...), so they are computed once and read back bitwise. The cache lives in
ROOT/<sha256(key)[:20]>/: another teacher or setting gets another folder and is never served these.

Format: the folder holds key.json (the full key) and shards `shard-{writer}-{unix_ns}-{hex}.safetensors`,
each written whole and atomically by one process, so several ranks can fill one folder at once.
Per field f a shard holds `f` (its entries concatenated along dim 0) and `f.lengths` (int64, each
entry's dim-0 length); its metadata holds `format`, `key` (the full key hash), `texts` (json list of
text_key per entry) and `fields` (json list). Entries are read as slices of the memory-mapped file.
Whatever does not check out (key.json, an unparsable shard, a wrong key or format, lengths that do
not add up, other fields) is reported through `warn` and deleted: its texts miss and are recomputed.

A little over 300 lines: every way a shard can be unusable is checked and repaired here, next to
the format it protects.

Example:
    bgeprune train recipes/minilm-50pct.toml --teacher-cache ~/.cache/bgeprune/teacher
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..artifacts import hash_file_into, write_json
from ..atomic import atomic_file
from ..errors import ArtifactError

FORMAT = "bgeprune-teacher-cache-1"
KEY_FILE = "key.json"
_TMP = ".tmp-"  # in the names of other writers' files in progress (atomic.tmp_name); never indexed
_STALE_TMP_S = 3600  # a temp file this old belongs to a crashed writer
_MAX_HANDLES = 64  # each open shard is an mmap; bounded so a big cache cannot run out of file handles

Entry = dict[str, torch.Tensor]
Schema = dict[str, tuple[torch.dtype, tuple[int, ...]]]  # field -> (dtype, shape after dim 0)


class TeacherCacheError(ArtifactError):
    """The teacher cache folder cannot be used at all (not a directory, not writable, disk full)."""


class _Bad(Exception):  # a shard that must not be used; the message says why
    pass


def file_fingerprint(paths: list[Path]) -> str:
    """sha256 over (file name, size, content) of each file in order; names only, so a moved model still matches."""
    digest = hashlib.sha256()
    for path in map(Path, paths):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        hash_file_into(digest, path)
    return digest.hexdigest()


# The files that make a teacher what it is: weights, config, tokenizer, heads (pooling: passed separately).
TEACHER_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model", ".txt")


def teacher_key(model_dir: Path, pooling_config: Path | None, max_length: int, fields: list[str], pooling: str,
                precision: str) -> dict:
    """The cache key of one teacher and setting: any change to its files or to these values is another folder."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.suffix in TEACHER_SUFFIXES)
    files += [pooling_config] if pooling_config is not None and pooling_config.is_file() else []
    return {"format": 1, "teacher_files": file_fingerprint(files), "max_length": max_length, "fields": fields,
            "pooling": pooling, "precision": precision}


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class _Shard:
    keys: list[str]
    starts: dict[str, list[int]]  # field -> cumulative dim-0 offsets, one more than entries


class TeacherCache:
    """`get` gives each text's outputs or None (and counts hits/misses); `put` buffers new ones and writes a
    shard every `shard_entries`; `flush`/`close` write the rest. `writer` must differ between processes."""

    def __init__(self, root: Path, key: dict, shard_entries: int = 512, writer: str = "0",
                 warn: Callable[[str], None] | None = None):
        self._key = _canonical(key)
        self._hash = hashlib.sha256(self._key.encode()).hexdigest()
        self.path = Path(root) / self._hash[:20]
        self.shard_entries = max(1, int(shard_entries))
        self._writer = re.sub(r"[^A-Za-z0-9_]", "_", str(writer)) or "0"  # '-' separates name parts
        self._warn = warn if warn is not None else (lambda m: warnings.warn(m, RuntimeWarning, stacklevel=3))
        self.hits = self.misses = self.stored = 0
        self._index: dict[str, tuple[str, int]] = {}  # text_key -> (shard name, entry number)
        self._shards: dict[str, _Shard] = {}
        self._seen: set[str] = set()  # shard names indexed or rejected
        self._handles: OrderedDict[str, object] = OrderedDict()  # LRU of open shards
        self._buffer: dict[str, Entry] = {}
        self._schema: Schema | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not os.access(self.path, os.W_OK):
                raise PermissionError(f"no write permission on {self.path}")
            self._check_key()
        except OSError as exc:
            raise TeacherCacheError(f"the teacher cache {self.path} cannot be used ({exc.__class__.__name__}: "
                                    f"{exc}); point it at a writable directory, or turn the cache off.") from None
        self.refresh()

    def get(self, texts: list[str], count: bool = True) -> list[Entry | None]:
        """Each text's outputs, None where it is not cached; `count=False` leaves hits/misses alone."""
        keys = [text_key(t) for t in texts]
        if not all(map(self._has, keys)):
            self.refresh()  # another rank may have written them since
        out = [self._read(k) if self._has(k) else None for k in keys]  # _read repairs and gives None if broken
        if count:
            present = sum(e is not None for e in out)
            self.hits, self.misses = self.hits + present, self.misses + len(keys) - present
        return out

    def put(self, texts: list[str], outputs: list[Entry]) -> None:
        if len(texts) != len(outputs):
            raise ValueError(f"put got {len(texts)} texts but {len(outputs)} outputs")
        for text, output in zip(texts, outputs):
            k = text_key(text)
            if self._has(k):
                continue
            schema = {f: (t.dtype, tuple(t.shape[1:])) for f, t in output.items()}
            bad = not output or any(t.dim() == 0 or f.endswith(".lengths") for f, t in output.items())
            problem = "is not a non-empty dict of tensors of 1+ dims" if bad else self._schema_problem(schema)
            if problem:
                raise ValueError(f"teacher output for {text[:40]!r} {problem}; every entry needs the same fields, "
                                 f"dtypes and trailing dims (none named '*.lengths'), all recorded in the cache key")
            self._schema = self._schema or schema
            self._buffer[k] = {f: t.detach().to("cpu", copy=True).contiguous() for f, t in output.items()}
            if len(self._buffer) >= self.shard_entries:
                self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        keys, entries = list(self._buffer), list(self._buffer.values())
        fields, tensors = sorted(entries[0]), {}
        for f in fields:
            tensors[f] = torch.cat([e[f] for e in entries])
            tensors[f + ".lengths"] = torch.tensor([e[f].shape[0] for e in entries], dtype=torch.int64)
        metadata = {"format": FORMAT, "key": self._hash, "texts": json.dumps(keys), "fields": json.dumps(fields)}
        name = f"shard-{self._writer}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.safetensors"
        try:
            self._atomic(self.path / name, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        except OSError as exc:
            raise TeacherCacheError(f"cannot write teacher cache shard {self.path / name} ({exc.__class__.__name__}: "
                                    f"{exc}); free disk space or point the cache at a writable directory.") from None
        self._add(name, _Shard(keys, {f: [0, *tensors[f + ".lengths"].cumsum(0).tolist()] for f in fields}))
        self._buffer.clear()
        self.stored += len(keys)

    def refresh(self) -> None:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return
        now, new = time.time(), []
        for name in names:
            path = self.path / name
            try:
                if _TMP in name and now - path.stat().st_mtime > _STALE_TMP_S:
                    path.unlink()
                elif name.startswith("shard-") and name.endswith(".safetensors") and name not in self._seen:
                    new.append((path.stat().st_mtime_ns, name))
            except OSError:
                pass  # removed meanwhile by its writer or by another rank's repair
        for _, name in sorted(new):
            self._open_shard(name)
        for k in [k for k in self._buffer if k in self._index]:
            del self._buffer[k]  # another rank stored it already

    def __len__(self) -> int:
        return len(self._index) + len(self._buffer)  # disjoint: put skips indexed texts, refresh drops them

    def close(self) -> None:
        self.flush()
        self._handles.clear()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _has(self, k: str) -> bool:
        return k in self._buffer or k in self._index

    def _atomic(self, final: Path, write: Callable[[Path], None]) -> None:
        with atomic_file(final) as tmp:
            write(tmp)

    def _check_key(self) -> None:
        key_file = self.path / KEY_FILE
        if key_file.exists():
            with suppress(ValueError):
                if _canonical(json.loads(key_file.read_text(encoding="utf-8"))) == self._key:
                    return
            shards = sorted(self.path.glob("shard-*.safetensors"))
            for shard in shards:
                shard.unlink(missing_ok=True)
            self._warn(f"teacher cache {key_file} does not match this teacher's key (edited, corrupt, or another "
                       f"key with the same hash); deleted its {len(shards)} shard(s), the cache starts empty")
        self._atomic(key_file, lambda tmp: write_json(tmp, json.loads(self._key)))

    def _schema_problem(self, schema: Schema) -> str | None:
        if self._schema is None or schema == self._schema:
            return None
        if set(schema) != set(self._schema):
            return f"has fields {sorted(schema)}, the cache holds {sorted(self._schema)}"
        f = next(f for f in sorted(schema) if schema[f] != self._schema[f])
        return f"has '{f}' as (dtype, trailing dims) {schema[f]}, the cache holds {self._schema[f]}"

    def _open_shard(self, name: str) -> None:
        try:
            self._add(name, self._parse(self._handle(name)))
        except FileNotFoundError:
            pass  # deleted by another rank's repair between listing and opening
        except OSError as exc:
            self._drop(name, f"cannot be opened ({exc.__class__.__name__}: {exc})", delete=False)
        except _Bad as exc:
            self._drop(name, str(exc))
        except Exception as exc:  # whatever safetensors or json raise for a damaged file
            self._drop(name, f"cannot be parsed ({exc.__class__.__name__}: {exc})")

    def _parse(self, handle) -> _Shard:
        meta = handle.metadata() or {}
        if meta.get("format") != FORMAT:
            raise _Bad(f"has format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("key") != self._hash:
            raise _Bad(f"was written for key {str(meta.get('key'))[:20]}, not this cache's {self._hash[:20]}")
        keys, fields = json.loads(meta["texts"]), json.loads(meta["fields"])
        if not fields or set(handle.keys()) != {*fields, *(f + ".lengths" for f in fields)}:
            raise _Bad(f"holds tensors {sorted(handle.keys())}, which do not match its fields {fields}")
        starts, schema = {}, {}
        for f in fields:
            lengths = handle.get_tensor(f + ".lengths")
            if lengths.dtype != torch.int64 or lengths.shape != (len(keys),) or bool((lengths < 0).any()):
                raise _Bad(f"has '{f}.lengths' that is not one non-negative int64 per text ({len(keys)})")
            starts[f] = [0, *lengths.cumsum(0).tolist()]
            tensor = handle.get_slice(f)
            shape = tensor.get_shape()
            if not shape or shape[0] != starts[f][-1]:
                raise _Bad(f"has '{f}' lengths adding up to {starts[f][-1]} rows, but the tensor has shape {shape}")
            head = tensor[0:0]  # dtype and trailing dims without reading any data
            schema[f] = (head.dtype, tuple(head.shape[1:]))
        problem = self._schema_problem(schema)
        if problem:
            raise _Bad(problem)
        self._schema = self._schema or schema
        return _Shard(list(keys), starts)

    def _add(self, name: str, shard: _Shard) -> None:
        self._seen.add(name)
        self._shards[name] = shard
        for i, k in enumerate(shard.keys):
            self._index.setdefault(k, (name, i))

    def _drop(self, name: str, problem: str, delete: bool = True) -> None:
        """Forget a shard (its texts will miss), deleting the file when it is damaged rather than missing."""
        path = self.path / name
        self._seen.add(name)
        self._handles.pop(name, None)
        shard = self._shards.pop(name, None)
        for k in shard.keys if shard else ():
            if self._index.get(k, ("",))[0] == name:
                del self._index[k]
        if delete:
            with suppress(OSError):
                path.unlink(missing_ok=True)
        self._warn(f"teacher cache shard {path} {problem}; {'deleted it' if delete else 'ignoring it'}, "
                   f"its texts will be recomputed")

    def _handle(self, name: str):
        handle = self._handles.pop(name, None)
        if handle is None:
            handle = safe_open(str(self.path / name), framework="pt")
        self._handles[name] = handle  # most recently used last
        while len(self._handles) > _MAX_HANDLES:
            self._handles.popitem(last=False)
        return handle

    def _read(self, k: str) -> Entry | None:
        """Copies, so callers may change them in place without touching the buffer or the mmapped shard."""
        if k in self._buffer:
            return {f: t.clone() for f, t in self._buffer[k].items()}
        name, i = self._index[k]
        try:
            handle = self._handle(name)
            return {f: handle.get_slice(f)[s[i]:s[i + 1]].clone() for f, s in self._shards[name].starts.items()}
        except FileNotFoundError:
            self._drop(name, "vanished", delete=False)
        except Exception as exc:  # damaged since it was indexed
            self._drop(name, f"could not be read ({exc.__class__.__name__}: {exc})")
        return None


def open_run_cache(root: Path, ctx, r, device: torch.device, rank: int,
                   warn: Callable[[str], None]) -> TeacherCache:
    """The cache for exactly one run's teacher (`ctx`: a models.recipe_base.RecipeBase; `r`: its Recipe), max
    length, precision and teacher outputs (`TeacherNeeds`, what the trainer's teacher computes too)."""
    from ..config import targeted_masks
    from ..errors import UsageError
    from ..models.st_files import pooling_config_path
    from .distill_model import TeacherNeeds

    needs = TeacherNeeds.of(r.distill, ctx.base_heads is not None, targeted_masks(r.target, ctx.dims))
    if needs.layerwise:
        raise UsageError("--teacher-cache cannot hold the per-layer teacher states that distill.layerwise needs; "
                         "set distill.layerwise = 0 or drop --teacher-cache.")
    key = teacher_key(ctx.base_dir, pooling_config_path(ctx.base_dir), r.data.max_length, needs.cache_fields,
                      repr(ctx.pooling), "bf16-autocast" if device.type == "cuda" else "fp32")
    return TeacherCache(Path(root).expanduser(), key, writer=f"rank{rank}", warn=warn)
