"""verify's `compare` check: how much an export agrees with a reference model, per retrieval mode.

Both encode the probe texts as passages (each with its own passage prompt); sparse and ColBERT are
compared only when both are bge-m3 style. Reported, never judged (the check's status is "info").

Example:
    bgeprune verify out/smoke-m3 --compare builtin:tiny-bge-m3
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import m3
from ..models.agreement import agreement, m3_agreement
from ..models.encoding import encode
from ..models.loading import load_model, load_tokenizer, read_config, resolve_base
from ..models.m3 import M3Output
from ..models.probe import probe_texts
from ..models.st_files import read_pooling, read_prompts
from .static_checks import Check


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


def check_compare(out: Path, reference: str, probe: Path | None) -> Check:
    numbers = compare_models(out, reference, probe_texts(probe))
    parts = []
    for mode in ("dense", "sparse", "colbert"):
        if mode in numbers:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in numbers[mode].items() if isinstance(v, float))
            parts.append(f"{mode}: {shown}")
    note = f" ({numbers['note']})" if "note" in numbers else ""
    return Check("compare", "info", f"agreement with {reference} on {numbers['texts']} texts: "
                 + "; ".join(parts) + note, numbers)
