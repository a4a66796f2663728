"""How much a pruned model agrees with a reference on the same texts, per retrieval mode.

Each mode gives a text-by-text score matrix (dense: dot products of normalised vectors; sparse:
lexical matching; ColBERT: late interaction). Agreement compares two such matrices without needing
the same dimensions: Spearman correlation of all off-diagonal scores, and the overlap of each
text's top-k neighbours. Dense vectors of the same width are also compared directly (cosine).

bench reports it per mode; verify uses it for the int8 graph and `--compare`.

Example:
    bgeprune verify out/smoke-m3 --compare builtin:tiny-bge-m3
"""

from __future__ import annotations

import torch

from . import m3
from .m3 import M3Output


def spearman(ref: torch.Tensor, got: torch.Tensor) -> float:
    """Spearman's rank correlation with tied values sharing their average rank (sparse scores hold many
    exact zeros; ranking ties by position would invent an order the model never gave)."""
    from scipy.stats import spearmanr

    if torch.equal(ref, got):
        return 1.0
    if bool((ref == ref[0]).all()) or bool((got == got[0]).all()):
        return 0.0  # one side ranks nothing: no agreement to measure (scipy would give nan)
    return float(spearmanr(ref.double().numpy(), got.double().numpy()).statistic)


def score_agreement(ref: torch.Tensor, got: torch.Tensor, k: int = 10) -> dict:
    """Spearman correlation of off-diagonal scores and top-k neighbour overlap of two [n, n] matrices."""
    n = ref.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    rho = spearman(ref[~eye], got[~eye])
    k = min(k, n - 1)
    top_ref = ref.masked_fill(eye, float("-inf")).topk(k).indices
    top_got = got.masked_fill(eye, float("-inf")).topk(k).indices
    overlap = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(top_ref, top_got)) / (k * n)
    return {"spearman_pairwise": rho, f"top{k}_overlap": overlap}


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


def encodings_agreement(ref: M3Output, got: M3Output, with_heads: bool) -> dict:
    """Per-mode agreement of two encodings of the same texts; dense alone without bge-m3's heads."""
    return m3_agreement(ref, got) if with_heads else {"dense": agreement(ref.dense, got.dense)}
