"""Half-precision exports (`export-hf --dtype`): which dtypes, how the weights are rounded, and what
`verify` accepts from an export whose weights were rounded (docs/publishing.md, Half-precision weights).

A float32 export reproduces the masked model to float tolerance (1e-5). Rounding the weights to float16
or bfloat16 moves every output by the rounding of every weight it passes through, so a rounded export
is proved at a tolerance that fits its dtype: a max |export - masked| bound and, because that bound
alone says little about vectors, the lowest cosine between any exported output vector and the masked
model's (each text's embedding, each token's state, each ColBERT vector). The bounds were chosen from
what the rounding measured on real weights (docs/results.md, Half-precision exports), with margin.

Example:
    bgeprune export-hf runs/minilm-50pct out/minilm-50pct-fp16 --dtype float16 && bgeprune verify out/minilm-50pct-fp16
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EXPORT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Tolerance:
    atol: float
    min_cosine: float | None  # None: max |diff| alone (float32 is exact to float tolerance)


TOLERANCES = {"float32": Tolerance(1e-5, None), "float16": Tolerance(5e-2, 0.999),
              "bfloat16": Tolerance(2e-1, 0.99)}


def round_weights(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Every floating tensor in `dtype` (integer buffers, e.g. position ids, as they are)."""
    target = getattr(torch, dtype)
    return {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}


def min_cosines(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per output of both: the lowest cosine between matching vectors (the last axis; a 1-d output, such
    as every token's sparse weight in a row, is one vector), rows of zeros (padding) skipped. Token ids
    are not vectors and are left out."""
    result = {}
    for key in sorted(set(expected) & set(got)):
        a, b = expected[key], got[key]
        if key.endswith("token_ids") or a.shape != b.shape or a.dim() < 1 or not a.is_floating_point():
            continue
        a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
        real = (a.abs().sum(-1) > 0) | (b.abs().sum(-1) > 0)
        if real.any():
            result[key] = float(F.cosine_similarity(a[real], b[real], dim=-1).min())
    return result
