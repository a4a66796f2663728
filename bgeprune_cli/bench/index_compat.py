"""Index compatibility: one model's queries against the other's documents, in every retrieval mode.

A user who keeps the index the base built encodes only queries with the pruned model. For dense vectors
that needs the same output width (hidden kept); for bge-m3's sparse output the lexical weights are
keyed by token ids, so a trimmed vocabulary's ids are mapped back to the base's first
(`VocabMap.to_base_ids`); ColBERT vectors need the same width, like dense ones, and `m3` combines the
three cross scores as FlagEmbedding does. The pruned model's query side is what changes; the base's
documents are the index.

Example:
    python -c "from bgeprune_cli.bench.index_compat import DIRECTIONS; print(DIRECTIONS)"
"""

from __future__ import annotations

import torch

from ..models.m3 import HEAD_MODES, M3Output, mode_scores
from .multilingual import crossed_summary

DIRECTIONS = ("model_queries_base_docs", "base_queries_model_docs")


def in_base_ids(output: M3Output, vocab_map) -> M3Output:
    """`output` with its lexical weights keyed by the base's token ids (unchanged without a trimmed vocabulary)."""
    if vocab_map is None:
        return output
    return M3Output(output.dense, vocab_map.to_base_ids(output.lexical), output.colbert)


def cross_directions(modes: list[str], model: tuple[M3Output, M3Output], base: tuple[M3Output, M3Output],
                     vocab_map=None) -> dict[str, dict[str, torch.Tensor]]:
    """Per direction and mode, scores across the two models: the pruned model's queries against the base's
    documents, and the base's queries against the pruned model's documents. Each side is a (queries,
    documents) pair of outputs; `vocab_map` is the pruned model's trimmed vocabulary, if any."""
    (model_q, model_d), (base_q, base_d) = model, base
    model_q, model_d = in_base_ids(model_q, vocab_map), in_base_ids(model_d, vocab_map)
    return {DIRECTIONS[0]: mode_scores(modes, model_q, base_d), DIRECTIONS[1]: mode_scores(modes, base_q, model_d)}


def heads_by_mode(per_direction: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """{direction: {mode: v}} as {mode: {direction: v}} for the head modes (dense stays under `asymmetric`)."""
    modes = [m for m in next(iter(per_direction.values())) if m in HEAD_MODES]
    return {mode: {direction: v[mode] for direction, v in per_direction.items() if mode in v} for mode in modes}


def summarize_heads(bitext: dict, base_means: dict) -> dict:
    """Over the bitext languages, per head mode: the pruned xx queries against the base's English index, as
    `multilingual.crossed_summary` gives the dense view (`base_means`: bench's cross_lingual_mean)."""
    modes = next(iter(bitext.values()))["asymmetric_modes"]
    return {mode: crossed_summary({name: s["asymmetric_modes"][mode][DIRECTIONS[0]] for name, s in bitext.items()},
                                  base_means[mode]["base"]) for mode in modes}
