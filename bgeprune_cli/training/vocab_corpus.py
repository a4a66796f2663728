"""The trimming corpus of a recipe's `[vocab]`: read it, tokenize it with the base tokenizer, count ids.

`plan_vocabulary` is the one computation of the kept-id list (`finalize-masks` records it; `check`
runs it as a dry run and reports it); `preflight` is the cheap part (tokenizer files understood, `keep`
tokens in the vocabulary, corpus files readable) that `train` and `magnitude` run before any work, so
a bad recipe never costs a training run. The corpus is read by the training data reader (files,
directories, globs, JSONL; every problem as file:line), or is the first `vocab.stream_texts` texts of
the recipe's data.stream.

Example:
    bgeprune check recipes/vocab-smoke.toml      # tokenizes the corpus and reports the tokens kept
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Recipe, VocabSection
from ..errors import DataError, RecipeError
from ..models.tokenizers.files import TokenizerFiles, base_tokenizer_files
from ..pruning.vocab import select_vocabulary, vocab_summary
from ..ui import Progress
from .data import DataIndex, open_data, with_packaged

CHUNK = 2000  # texts per encode_batch call
SAMPLE = 64  # corpus texts recorded for verify's tokenizer check
SAMPLE_MAX_CHARS = 2000  # longer texts are skipped for the sample (never cut: a cut word tokenizes otherwise)
STREAM_TEXT_MAX_CHARS = 100_000  # a streamed web page is counted up to here, so one huge page costs no minutes


@dataclass
class VocabPlan:
    kept: list[int]
    files: TokenizerFiles
    corpus: dict  # files, texts, tokens, distinct tokens, fingerprint
    sample: list[str] = field(default_factory=list)

    def summary(self, base_rows: int, hidden: int, base_hidden: int | None = None) -> dict:
        section = {"min_count": self.corpus["min_count"], "max_tokens": self.corpus["max_tokens"]}
        return vocab_summary(self.kept, base_rows, hidden, base_hidden, tokenizer_size=len(self.files), **section,
                             corpus={k: v for k, v in self.corpus.items() if k not in section})


def keep_ids(section: VocabSection, files: TokenizerFiles, where: Callable[[str], str]) -> list[int]:
    """The ids of `vocab.keep`; every token that is not in the vocabulary is reported at once (exit 2)."""
    problems, ids = [], []
    for i, token in enumerate(section.keep):
        token_id = files.lookup(token)
        if token_id is None:
            problems.append(f"{where('vocab.keep')}: vocab.keep[{i}]: {token!r} is not a token of the base's "
                            f"vocabulary ({files.directory}/tokenizer.json){files.suggest(token)}")
        else:
            ids.append(token_id)
    if problems:
        raise RecipeError(problems)
    return ids


def open_corpus(section: VocabSection) -> DataIndex:
    """The corpus files, checked and indexed by the training data reader ("builtin:probe": the probe text)."""
    return open_data(with_packaged(section.corpus), "text", "vocab.corpus")


def count_texts(texts: list[str], files: TokenizerFiles, encoders: list | None = None) -> tuple[np.ndarray, set[str]]:
    """Per encoder and id, how often `texts` produce it (no special tokens added), and their characters as the
    tokenizer normalizes them."""
    encoders = encoders or files.encoders()
    counts = np.zeros((len(encoders), len(files)), dtype=np.int64)
    chars: set[str] = set()
    for row, encoder in enumerate(encoders):
        ids = [e.ids for e in encoder.encode_batch(texts, add_special_tokens=False)]
        flat = np.fromiter((i for row_ids in ids for i in row_ids), dtype=np.int64)
        counts[row] += np.bincount(flat, minlength=len(files))[:len(files)]
        normalizer = encoder.normalizer
        chars.update(*(normalizer.normalize_str(t) if normalizer else t for t in texts))
    return counts, chars


def count_tokens(index: DataIndex, files: TokenizerFiles, progress: bool = True) -> tuple[np.ndarray, int, set[str]]:
    """Per id, how often the corpus produces it; the number of tokens; the corpus's characters. With two
    pipelines (`TokenizerFiles.encoders`) a token counts as often as the one that makes it more."""
    encoders = files.encoders()
    counts = np.zeros((len(encoders), len(files)), dtype=np.int64)
    chars: set[str] = set()
    chunks = range(0, len(index), CHUNK)
    with Progress(f"tokenizing vocab.corpus ({len(index):,} texts)", len(chunks), log_every=5,
                  enabled=progress) as bar:
        for start in chunks:
            chunk_counts, chunk_chars = count_texts(
                [index.text(i) for i in range(start, min(start + CHUNK, len(index)))], files, encoders)
            counts += chunk_counts
            chars |= chunk_chars
            bar.advance()
    return counts.max(axis=0), int(counts[0].sum()), chars


def count_stream(recipe: Recipe, files: TokenizerFiles, progress: bool = True) -> tuple[np.ndarray, int, set[str],
                                                                                    list[str], dict]:
    """`count_tokens` over the first `vocab.stream_texts` texts of data.stream, read in stream order (no
    shuffle buffer: the same texts whenever the stream holds the same data) and a chunk at a time; also
    the sample and what the corpus was."""
    from .data_stream import open_stream, stream_fingerprint, text_field_of

    sources, wanted = recipe.data.stream, recipe.vocab.stream_texts
    field = text_field_of(sources)
    records = open_stream(sources, "data.stream", recipe.train.seed)
    texts = (r[field][:STREAM_TEXT_MAX_CHARS] for r in records
             if isinstance(r, dict) and isinstance(r.get(field), str) and r[field].strip())
    encoders = files.encoders()
    counts = np.zeros((len(encoders), len(files)), dtype=np.int64)
    chars: set[str] = set()
    sample, seen, every = [], 0, max(1, wanted // SAMPLE)
    with Progress(f"tokenizing the first {wanted:,} texts of data.stream", -(-wanted // CHUNK), log_every=5,
                  enabled=progress) as bar:
        while seen < wanted and (chunk := list(itertools.islice(texts, min(CHUNK, wanted - seen)))):
            sample += [t for i, t in enumerate(chunk, seen) if i % every == 0 and len(t) <= SAMPLE_MAX_CHARS]
            chunk_counts, chunk_chars = count_texts(chunk, files, encoders)
            counts += chunk_counts
            chars |= chunk_chars
            seen += len(chunk)
            bar.advance()
    if not seen:
        raise DataError("vocab.stream_texts: data.stream gave no text to count; check its text_field")
    digest = hashlib.sha256(json.dumps([stream_fingerprint(sources, recipe.train.seed), wanted]).encode())
    corpus = {"files": [f"data.stream: {s.dataset} {s.name or ''}".strip() for s in sources], "texts": seen,
              "fingerprint": digest.hexdigest()}
    return counts.max(axis=0), int(counts[0].sum()), chars, sample[:SAMPLE], corpus


def _sample(index: DataIndex) -> list[str]:
    """Up to SAMPLE texts spread evenly over the corpus (deterministic)."""
    step = max(1, len(index) // SAMPLE)
    texts = (index.text(i) for i in range(0, len(index), step))
    return [t for t in texts if len(t) <= SAMPLE_MAX_CHARS][:SAMPLE]


def preflight(recipe: Recipe, base_dir: Path, base_config: dict, where: Callable[[str], str]) -> None:
    """What can be checked without tokenizing the corpus: tokenizer files, `keep`, corpus files."""
    if recipe.vocab is None:
        return
    files = base_tokenizer_files(base_dir, base_config)
    keep_ids(recipe.vocab, files, where)
    if recipe.vocab.stream_texts is None:
        open_corpus(recipe.vocab).close()
    else:
        from .data_stream import open_stream

        open_stream(recipe.data.stream, "data.stream", recipe.train.seed)


def plan_vocabulary(recipe: Recipe, base_dir: Path, base_config: dict, where: Callable[[str], str] | None = None,
                    progress: bool = True) -> VocabPlan:
    """The kept-id list for `recipe.vocab` (DataError when the corpus keeps no token, RecipeError for a bad keep)."""
    section = recipe.vocab
    files = base_tokenizer_files(base_dir, base_config)
    keep = keep_ids(section, files, where or (lambda key: "recipe"))
    if section.stream_texts is not None:
        counts, tokens, chars, sample, corpus = count_stream(recipe, files, progress)
    else:
        with open_corpus(section) as index:
            counts, tokens, chars = count_tokens(index, files, progress)
            sample = _sample(index)
            corpus = {"files": [str(f) for f in index.files], "texts": len(index), "fingerprint": index.fingerprint}
    characters = files.character_ids(chars) if section.characters else set()
    corpus = {"files": corpus["files"], "texts": corpus["texts"], "tokens": tokens,
              "distinct": int(np.count_nonzero(counts)), "characters": len(characters),
              "fingerprint": corpus["fingerprint"], "min_count": section.min_count, "max_tokens": section.max_tokens}
    kept = select_vocabulary(counts, files.special, keep, section.min_count, section.max_tokens, characters)
    return VocabPlan(kept, files, corpus, sample)
