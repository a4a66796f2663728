"""Passages cut to what `data.max_length` tokens can use, before they are tokenized.

Tokenizers read a whole passage before truncating it, so one 10 MB line in a corpus costs minutes
per step. Every text that training reads (indexed files, streamed datasets, pairs) goes through a
`PassageCutter`, which cuts it to `passage_limit(max_length)` characters at a whitespace and
warns once, naming the first long passage's file and line (or stream record).

Example:
    bgeprune train recipes/my.toml     # "warning: data.train: corpus.txt:3: a passage of 10,485,760 characters ..."
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

CHARS_PER_TOKEN = 32  # passages are cut to this many characters per token of data.max_length


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


def line_number(path: Path, offset: int) -> int:
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
