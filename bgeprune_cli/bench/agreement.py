"""How much a pruned model agrees with a reference on the same texts, per retrieval mode.

Each mode gives a text-by-text score matrix (dense: dot products of normalised vectors; sparse:
lexical matching; ColBERT: late interaction). Agreement compares two such matrices without needing
the same dimensions: Spearman correlation of all off-diagonal scores, and the overlap of each
text's top-k neighbours. Dense vectors of the same width are also compared directly (cosine).

Example:
    bgeprune verify out/smoke-m3 --compare builtin:tiny-bge-m3
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import m3
from ..models.encoding import encode
from ..models.loading import load_model, load_tokenizer, read_config, resolve_base
from ..models.m3 import M3Output
from ..models.st_files import read_pooling, read_prompts


def _ranks(values: torch.Tensor) -> torch.Tensor:
    return values.argsort().argsort().float()


def score_agreement(ref: torch.Tensor, got: torch.Tensor, k: int = 10) -> dict:
    """Spearman correlation of off-diagonal scores and top-k neighbour overlap of two [n, n] matrices."""
    n = ref.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    spearman = float(torch.corrcoef(torch.stack([_ranks(ref[~eye]), _ranks(got[~eye])]))[0, 1])
    k = min(k, n - 1)
    top_ref = ref.masked_fill(eye, float("-inf")).topk(k).indices
    top_got = got.masked_fill(eye, float("-inf")).topk(k).indices
    overlap = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(top_ref, top_got)) / (k * n)
    return {"spearman_pairwise": spearman, f"top{k}_overlap": overlap}


def agreement(ref: torch.Tensor, emb: torch.Tensor, k: int = 10) -> dict:
    """Dense agreement of two embedding sets of the same texts (+ cosine when dims match)."""
    ref, emb = torch.nn.functional.normalize(ref, dim=-1), torch.nn.functional.normalize(emb, dim=-1)
    result = {**score_agreement(ref @ ref.T, emb @ emb.T, k), "texts": len(ref)}
    if ref.shape[1] == emb.shape[1]:
        cosine = (ref * emb).sum(-1)
        result.update(dense_cosine_mean=float(cosine.mean()), dense_cosine_min=float(cosine.min()))
    return result


def m3_agreement(ref: M3Output, got: M3Output, k: int = 10) -> dict:
    """Per mode: dense (with cosine when dims match), sparse and ColBERT score agreement."""
    return {"dense": agreement(ref.dense, got.dense, k),
            "sparse": score_agreement(m3.sparse_scores(ref.lexical, ref.lexical),
                                      m3.sparse_scores(got.lexical, got.lexical), k),
            "colbert": score_agreement(m3.colbert_scores(ref.colbert, ref.colbert),
                                       m3.colbert_scores(got.colbert, got.colbert), k)}


def _encode(directory: Path, texts: list[str], with_heads: bool) -> M3Output | torch.Tensor:
    """The texts as passages, with the model's own passage prompt (if its sentence-transformers config has one)."""
    model, tokenizer, pooling = load_model(directory), load_tokenizer(directory), read_pooling(directory)
    heads = m3.load_heads(directory, read_config(directory)["hidden_size"]) if with_heads else None
    out = encode(model, tokenizer, pooling, read_prompts(directory).passages(texts), heads=heads, max_length=256,
                 batch_size=8)
    return out if heads is not None else out.dense


def compare_models(out: Path, reference: str, texts: list[str]) -> dict:
    """Agreement of `out` with `reference` per mode; sparse and ColBERT only when both are bge-m3 style."""
    ref_dir = resolve_base(reference)
    both = m3.has_heads(ref_dir) and m3.has_heads(out)
    ref, got = _encode(ref_dir, texts, both), _encode(out, texts, both)
    if both:
        return {**m3_agreement(ref, got), "texts": len(texts)}
    note = None
    if m3.has_heads(ref_dir) != m3.has_heads(out):
        note = "sparse and ColBERT not compared: only one of the two models has bge-m3 head files"
    return {"dense": agreement(ref, got), "texts": len(texts), **({"note": note} if note else {})}
