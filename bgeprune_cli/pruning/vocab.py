"""The vocabulary axis: which token ids survive, chosen once from a corpus's token counts.

`select_vocabulary` turns per-id counts into the kept-id list (ascending, so new ids keep the old
order): the base's special and added tokens and `keep` always, the single-character tokens of the
corpus's characters (so an unseen word in those scripts falls back to characters, not <unk>), then
every id the corpus produced at least `min_count` times, at most `max_tokens` in all (most frequent
first, ties to the lower id).
`finalize-masks` records the list in the masks artifact's Layout; `prune` slices the rows of
`embeddings.word_embeddings` with it; `export-hf` rewrites the tokenizer files from it.

The masked model needs no hook for this axis: a kept row is read exactly as before, and the trimmed
tokenizer never produces a dropped id. For id-level parity (prune's check) a dropped id is read as
<unk> on both sides (`parity_batches`).

Example:
    select_vocabulary(np.array([0, 0, 5, 0, 2, 0]), special={0, 1}, keep=[], min_count=1, max_tokens=None)
    # -> [0, 1, 2, 4]
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError, RecipeError


def select_vocabulary(counts: np.ndarray, special: set[int], keep: list[int], min_count: int,
                      max_tokens: int | None, characters: set[int] = frozenset(), where: str = "vocab") -> list[int]:
    """The kept ids, ascending. Raises DataError when the corpus contributes no token of its own."""
    fixed = set(special) | set(keep) | set(characters)
    if max_tokens is not None and len(fixed) > max_tokens:
        raise RecipeError([f"{where}.max_tokens: {max_tokens} is fewer than the {len(fixed)} special, `keep` and "
                           f"single-character tokens that are always kept; raise it (or set vocab.characters = "
                           f"false)."])
    seen = np.flatnonzero(counts >= min_count)
    candidates = [int(i) for i in seen if int(i) not in fixed]
    if max_tokens is not None:  # most frequent first; a stable sort keeps ties in id order
        order = sorted(candidates, key=lambda i: -int(counts[i]))
        candidates = order[:max_tokens - len(fixed)]
    if not candidates and not set(characters) - set(special) - set(keep):
        produced = int(np.count_nonzero(counts))
        raise DataError(f"{where}.corpus: the corpus keeps no token: it produced {produced} distinct tokens "
                        f"({int(counts.sum())} in all), none of them at least vocab.min_count = {min_count} times "
                        f"beyond the always-kept special tokens{' within vocab.max_tokens' if max_tokens else ''}. "
                        f"Add text in your languages to vocab.corpus or lower vocab.min_count.")
    return sorted(fixed | set(candidates))


def vocab_summary(kept: list[int], base_size: int, hidden: int, base_hidden: int | None = None, **extra) -> dict:
    """How much of the vocabulary and its word-embedding table survive (for tables and manifests); `hidden`
    is the kept width (a target's hidden size), `base_hidden` the base's (default: the same)."""
    return {"kept": len(kept), "base": base_size, "fraction": len(kept) / base_size,
            "embedding_params": len(kept) * hidden, "base_embedding_params": base_size * (base_hidden or hidden),
            **extra}


def parity_batches(batches: list[dict], kept: list[int], base_unk: int) -> tuple[list[dict], list[dict]]:
    """(masked, pruned) copies of base-tokenized batches for an id-level comparison: ids the trimmed
    vocabulary dropped read <unk> on both sides; the pruned side gets the new ids."""
    kept_tensor = torch.tensor(kept)
    size = max(kept[-1], base_unk, max(int(b["input_ids"].max()) for b in batches)) + 1
    keep = torch.zeros(size, dtype=torch.bool)
    keep[kept_tensor] = True
    new = torch.zeros(size, dtype=torch.long)
    new[kept_tensor] = torch.arange(len(kept))
    masked, pruned = [], []
    for batch in batches:
        ids = torch.where(keep[batch["input_ids"]], batch["input_ids"], torch.full_like(batch["input_ids"], base_unk))
        masked.append({**batch, "input_ids": ids})
        pruned.append({**batch, "input_ids": new[ids]})
    return masked, pruned
