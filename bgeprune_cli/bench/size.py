"""Size and theoretical cost of a model: parameters, bytes on disk, FLOPs per token.

FLOPs count the encoder's matrix multiplies (2 per multiply-add), which is where an encoder's time
goes: per layer and token, q/k/v and the output projection (4·d·w for attention width w = heads ×
head size), the FFN (2·d·f), and attention itself (2·L·w for scores and again for the weighted
sum, at sequence length L). Embedding lookups, LayerNorms, softmax and GELU are left out; they
are why a measured speedup can fall short of the FLOPs ratio (the "speedup efficiency").

Example:
    python -c "from bgeprune_cli.bench.size import flops_per_token; \
print(flops_per_token([{'heads': 16, 'head_dim': 64, 'ffn': 4096}] * 24, 1024, 128) / 1e9)"
"""

from __future__ import annotations


def flops_per_token(arch: list[dict], hidden: int, length: int) -> float:
    """Forward FLOPs per token of the encoder layers at sequence length `length`."""
    total = 0
    for layer in arch:
        width = layer["heads"] * layer["head_dim"]
        total += 2 * (4 * hidden * width + 2 * hidden * layer["ffn"])  # projections and FFN
        total += 2 * 2 * length * width  # QKᵀ and attention-weighted values
    return float(total)


def size_summary(model) -> dict:
    """Parameters split by part, weight bytes on disk, and the per-layer architecture of a BenchModel."""
    return {"params": model.params(), "file_bytes": model.file_bytes(), "hidden": model.hidden,
            "layers": len(model.arch), "arch": model.arch, "vocab": model.vocab_size}


def ratios(model: dict, base: dict) -> dict:
    """model / base for every parameter count, the vocabulary and the file size."""
    result = {f"params_{k}": v / base["params"][k] for k, v in model["params"].items() if base["params"].get(k)}
    if base.get("vocab"):
        result["vocab"] = model["vocab"] / base["vocab"]
    if base["file_bytes"]:
        result["file_bytes"] = model["file_bytes"] / base["file_bytes"]
    return result
