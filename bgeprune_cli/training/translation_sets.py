"""Translation pairs from Hugging Face datasets (`[[data.translation_sets]]`), for distill.translation.

Parallel corpora on the Hub are small beside pre-training text (Tatoeba's English-German pairs are
16 MB), and the translation term draws pairs at random, so each set is downloaded whole by `datasets`
(into its own cache), its two columns written once as a JSONL file under
$BGEPRUNE_CACHE/translations/ (named by a hash of the set's settings, so a changed setting is a new
file), and from then on read exactly like a file in data.translations: the same index, the same seeded
draws, the same resume. A rerun, a resume and `bgeprune check` reuse the file.

Example:
    [[data.translation_sets]]
    dataset = "sentence-transformers/parallel-sentences-tatoeba"
    name = "en-de"          # columns "english" and "non_english" (the defaults)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..atomic import atomic_file
from ..config import DataSection, TranslationSet, hash_local_files
from ..errors import DataError, environment_error, missing_module
from ..models.builtins import cache_root

DIR = "translations"


def set_keys(data: DataSection) -> list[tuple[str, TranslationSet]]:
    return [(f"data.translation_sets[{i}]", s) for i, s in enumerate(data.translation_sets)]


def describe(source: TranslationSet) -> str:
    config = f" {source.name}" if source.name else ""
    limit = f", first {source.limit:,}" if source.limit else ""
    return f"{source.dataset}{config} [{source.split}]{limit}"


def fingerprint(source: TranslationSet, fields: tuple[str, str]) -> str:
    """The set's settings and the JSONL field names it is written with; for a builder ("json", "parquet"),
    also each local data file's size and modification time (globs expanded), so an edited file is read again."""
    digest = hashlib.sha256(json.dumps([source.model_dump(), list(fields)], sort_keys=True).encode())
    hash_local_files(digest, source.dataset, source.data_files)
    return digest.hexdigest()


def cached_path(source: TranslationSet, fields: tuple[str, str]) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{source.dataset}-{source.name or 'default'}-{source.split}")
    return cache_root() / DIR / f"{name[-80:]}-{fingerprint(source, fields)[:16]}.jsonl"


def materialize(source: TranslationSet, key: str, fields: tuple[str, str]) -> tuple[Path, int]:
    """(the JSONL file of this set's pairs, how many), written once; a problem is a DataError naming `key`."""
    path = cached_path(source, fields)
    if path.is_file():
        with path.open(encoding="utf-8") as lines:
            return path, sum(1 for _ in lines)
    try:
        import datasets
    except ImportError as exc:
        raise missing_module(exc, f"{key}: translation pairs from a dataset") from None
    from .data_stream import hub_errors

    what = describe(source)
    options = {"name": source.name, "split": source.split, "revision": source.revision}
    if source.data_files is not None:
        options["data_files"] = list(source.data_files)
    with hub_errors(key, what):
        table = datasets.load_dataset(source.dataset, **options)
    columns = list(getattr(table, "column_names", None) or [])
    missing = [c for c in (source.source_field, source.translation_field) if c not in columns]
    if missing:
        raise DataError(f"{key}: {what} has no column {', '.join(map(repr, missing))} (its columns: "
                        f"{', '.join(columns) or 'none'}); set source_field and translation_field to two of them")
    count = 0
    try:  # $BGEPRUNE_CACHE full or read-only: its own error; atomic_file leaves nothing half-written
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as out:
            for row in table.select_columns([source.source_field, source.translation_field]):
                text, translation = row[source.source_field], row[source.translation_field]
                if isinstance(text, str) and isinstance(translation, str) and text.strip() and translation.strip():
                    out.write(json.dumps({fields[0]: text, fields[1]: translation}, ensure_ascii=False) + "\n")
                    count += 1
                    if source.limit and count >= source.limit:
                        break
            if count == 0:
                raise DataError(f"{key}: {what} has no pair with text in both '{source.source_field}' and "
                                f"'{source.translation_field}'; check the split and the two column names")
    except OSError as exc:
        raise environment_error(exc, f"{key}: writing {path}") from exc
    return path, count


def materialize_all(data: DataSection) -> list[Path]:
    fields = tuple(data.translation_fields)
    return [materialize(source, key, fields)[0] for key, source in set_keys(data)]
