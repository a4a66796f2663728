"""Quality data for `bgeprune bench`: BEIR retrieval directories and bitext JSONL, checked on read.

BEIR layout: `corpus.jsonl` ({"_id", "text", optional "title"}), `queries.jsonl` ({"_id", "text"})
and `qrels.tsv` (or BEIR's `qrels/test.tsv`): `query-id<TAB>corpus-id<TAB>score`, header optional.
Every judged document must exist and every judged query too; an empty file is an error; all
problems name the file and line. Bitext: JSONL lines `{"en": ..., "xx": ...}` (one file, or a
directory of them, one set per file).

Example:
    bgeprune bench out/minilm-50pct --compare builtin:all-minilm-l6-v2 --beir ../shared/data/pydocs
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass
class BeirSet:
    name: str
    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]  # query id -> ids of relevant documents (score > 0)


@dataclass
class BitextSet:
    name: str
    language: str
    english: list[str]
    other: list[str]


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; a BEIR directory needs corpus.jsonl, queries.jsonl and qrels.tsv.")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc}).") from None
        missing = [key for key in required if not isinstance(row, dict) or not isinstance(row.get(key), str)]
        if missing:
            raise DataError(f"{path}:{number}: needs string field(s) {', '.join(missing)}.")
        rows.append(row)
    if not rows:
        raise DataError(f"{path} is empty; nothing to evaluate.")
    return rows


def _qrels_path(root: Path) -> Path:
    for candidate in (root / "qrels.tsv", root / "qrels" / "test.tsv"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root} has no qrels.tsv (or qrels/test.tsv); a BEIR directory needs corpus.jsonl, "
                    f"queries.jsonl and qrels.tsv.")


def load_beir(root: str | Path) -> BeirSet:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--beir {root} is not a directory; pass a BEIR-format directory "
                        f"(corpus.jsonl, queries.jsonl, qrels.tsv).")
    corpus = {str(d["_id"]): (d.get("title", "") + " " + d["text"]).strip()
              for d in _jsonl(root / "corpus.jsonl", ("_id", "text"))}
    queries = {str(q["_id"]): q["text"] for q in _jsonl(root / "queries.jsonl", ("_id", "text"))}
    qrels = _qrels_path(root)
    relevant: dict[str, set[str]] = {}
    unknown_docs, unknown_queries = [], []
    for number, line in enumerate(qrels.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if not line.strip() or (number == 1 and fields[0] in ("query-id", "query_id", "qid")):
            continue
        if len(fields) != 3:
            raise DataError(f"{qrels}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line[:80]!r}.")
        qid, cid, score = fields
        try:
            positive = float(score) > 0
        except ValueError:
            raise DataError(f"{qrels}:{number}: score {score!r} is not a number.") from None
        if cid not in corpus:
            unknown_docs.append(f"{number} ({cid})")
        if qid not in queries:
            unknown_queries.append(f"{number} ({qid})")
        if positive:
            relevant.setdefault(qid, set()).add(cid)
    if unknown_docs:
        raise DataError(f"{qrels}: {len(unknown_docs)} judgement(s) point at documents missing from "
                        f"{root / 'corpus.jsonl'}, at line(s) {', '.join(unknown_docs[:5])}; fix the qrels or "
                        f"the corpus.")
    if unknown_queries:
        raise DataError(f"{qrels}: {len(unknown_queries)} judgement(s) point at queries missing from "
                        f"{root / 'queries.jsonl'}, at line(s) {', '.join(unknown_queries[:5])}.")
    if not relevant:
        raise DataError(f"{qrels} has no positive judgements (score > 0); nothing to evaluate.")
    return BeirSet(root.name, queries, corpus, relevant)


def _bitext_file(path: Path) -> BitextSet:
    english, other, language = [], [], None
    for number, row in enumerate(_jsonl(path, ("en",)), 1):
        keys = sorted(set(row) - {"en"})
        if len(keys) != 1 or not isinstance(row[keys[0]], str):
            raise DataError(f"{path}: pair {number} must be {{\"en\": ..., \"<lang>\": ...}} with exactly one other "
                            f"language; it has {sorted(row)}.")
        if language not in (None, keys[0]):
            raise DataError(f"{path}: pair {number} pairs English with '{keys[0]}', earlier lines with '{language}'.")
        language = keys[0]
        english.append(row["en"])
        other.append(row[language])
    if len(english) < 2:
        raise DataError(f"{path} has {len(english)} pair(s); bitext matching needs at least 2.")
    return BitextSet(path.stem, language, english, other)


def load_bitext(path: str | Path) -> list[BitextSet]:
    """One set for a JSONL file; one per `*.jsonl` (sorted) for a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise DataError(f"--bitext {path} holds no *.jsonl files.")
        return [_bitext_file(f) for f in files]
    if not path.is_file():
        raise DataError(f"--bitext {path} does not exist; pass a JSONL file of {{\"en\", \"xx\"}} pairs or a "
                        f"directory of them.")
    return [_bitext_file(path)]
