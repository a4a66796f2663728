"""Masks: hard-concrete gate math, the deterministic finalize rule, and the kept-unit `Layout`.

Mask types and shapes (docs/design.md, Masks): layer [L], heads [L, H], ffn [L, F], hidden [d].
A keep-mask is boolean; a missing type means "keep everything of that type".

Example:
    bgeprune finalize-masks runs/smoke/train     # applies `finalize` to the run's gate scores
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..config import BaseDims, TargetSection

# Hard-concrete constants (Louizos et al. 2018; CoFi; Sheared-LLaMA).
BETA = 2 / 3
LIMIT_L, LIMIT_R = -0.1, 1.1
EPS = 1e-6
LOG_ALPHA_CLAMP = 4.6


def keep_prob(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0) = 1 - Q(0) = sigmoid(log_alpha - beta * log(-l / r))."""
    return torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_L / LIMIT_R))


def gate_noise(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """The uniform noise of one hard-concrete sample (drawn apart so every rank can share one draw)."""
    return torch.rand(shape, generator=generator, device=device).clamp(EPS, 1 - EPS)


def gates_from_noise(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Stretched-and-clamped hard-concrete gates for noise `u`; exact 0s and 1s occur."""
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / BETA)
    return (s * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)


def sample_gates(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One stretched-and-clamped hard-concrete sample; exact 0s and 1s occur."""
    return gates_from_noise(log_alpha, gate_noise(log_alpha.shape, generator, log_alpha.device))


def log_alpha_of(mask: torch.Tensor) -> torch.Tensor:
    """Gates that hold a binary mask: kept units at +clamp, dropped at -clamp, so finalize reproduces it."""
    return torch.where(mask.to(torch.bool), LOG_ALPHA_CLAMP, -LOG_ALPHA_CLAMP)


def mask_shapes(dims: BaseDims) -> dict[str, tuple[int, ...]]:
    return {"layer": (dims.layers,), "heads": (dims.layers, dims.heads), "ffn": (dims.layers, dims.ffn),
            "hidden": (dims.hidden,)}


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest scores; ties go to the lower index, so the result is reproducible."""
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    keep = torch.zeros(scores.shape, dtype=torch.bool)
    keep[order[:k]] = True
    return keep


def finalize(scores: dict[str, torch.Tensor], target: TargetSection, dims: BaseDims) -> dict[str, torch.Tensor]:
    """Binary keep-masks from gate scores (log_alpha): exact target counts, ranked by score.

    Targeted mode keeps exactly the target count per row (every kept layer the same heads and FFN).
    Sparsity mode keeps round(sum of keep probabilities) per row, at least one unit, so that no
    kept layer is left with zero heads or FFN units (whole layers are removed by the layer mask).
    """
    shapes = mask_shapes(dims)
    for name, tensor in scores.items():
        if tuple(tensor.shape) != shapes[name]:
            raise ValueError(f"gate '{name}' has shape {tuple(tensor.shape)}, expected {shapes[name]}")

    def count(name: str, row: torch.Tensor, targeted: int | None) -> int:
        if target.mode == "targeted":
            return targeted if targeted is not None else row.numel()
        return max(1, min(row.numel(), round(float(keep_prob(row).sum()))))

    masks: dict[str, torch.Tensor] = {}
    if "layer" in scores:
        masks["layer"] = top_k(scores["layer"], count("layer", scores["layer"], target.layers))
    kept_layers = masks.get("layer", torch.ones(dims.layers, dtype=torch.bool))
    for name, wanted in (("heads", target.heads), ("ffn", target.ffn)):
        if name in scores:
            rows = [top_k(row, count(name, row, wanted)) if kept_layers[i] else torch.zeros_like(row, dtype=torch.bool)
                    for i, row in enumerate(scores[name])]
            masks[name] = torch.stack(rows)
    if "hidden" in scores:
        masks["hidden"] = top_k(scores["hidden"], count("hidden", scores["hidden"], target.hidden))
    return masks


@dataclass(frozen=True)
class Layout:
    """Which original units survive, in original index order: the contract between masks and pruning."""

    layers: list[int]  # kept layer indices of the base
    heads: list[list[int]]  # per kept layer, kept head indices
    ffn: list[list[int]]  # per kept layer, kept FFN unit indices
    hidden: list[int]  # kept hidden dims
    head_dim: int
    base: dict  # the base's sizes: layers, heads, ffn, hidden
    vocab: list[int] | None = None  # kept token ids, ascending (None: the whole vocabulary); pruning/vocab.py

    @classmethod
    def from_masks(cls, masks: dict[str, torch.Tensor], dims: BaseDims, vocab: list[int] | None = None) -> "Layout":
        def kept(mask: torch.Tensor) -> list[int]:
            return torch.nonzero(mask, as_tuple=False).flatten().tolist()

        layers = kept(masks["layer"]) if "layer" in masks else list(range(dims.layers))
        heads = [kept(masks["heads"][i]) if "heads" in masks else list(range(dims.heads)) for i in layers]
        ffn = [kept(masks["ffn"][i]) if "ffn" in masks else list(range(dims.ffn)) for i in layers]
        hidden = kept(masks["hidden"]) if "hidden" in masks else list(range(dims.hidden))
        if not layers or not hidden or any(not h for h in heads) or any(not f for f in ffn):
            raise ValueError("masks leave a kept layer with no heads or FFN units, or no layers or hidden dims")
        return cls(layers, heads, ffn, hidden, dims.head_dim, asdict(dims),
                   sorted(vocab) if vocab is not None else None)

    @classmethod
    def from_json(cls, data: dict) -> "Layout":
        return cls(**data)  # layouts written before vocabulary trimming have no "vocab": the whole vocabulary

    def to_json(self, with_vocab: bool = True) -> dict:
        """`with_vocab=False` leaves the kept-id list out (an export's lineage.json points to vocab_map.json)."""
        data = asdict(self)
        if not with_vocab:
            data.pop("vocab")
        return data

    @property
    def base_dims(self) -> BaseDims:
        return BaseDims(**self.base)

    @property
    def uniform(self) -> bool:
        return len({len(h) for h in self.heads}) == 1 and len({len(f) for f in self.ffn}) == 1

    @property
    def stock(self) -> bool:
        """A stock config can describe it: uniform, and head size = hidden / heads is unchanged."""
        return self.uniform and len(self.heads[0]) * self.head_dim == len(self.hidden)

    def sizes(self) -> dict[str, int]:
        """Architecture summary (max over layers where they differ)."""
        return {"layers": len(self.layers), "heads": max(map(len, self.heads)), "ffn": max(map(len, self.ffn)),
                "hidden": len(self.hidden)}

    def encoder_params(self) -> int:
        """Parameters of the encoder layers (q, k, v and output projections, FFN, both LayerNorms)."""
        d, hd = len(self.hidden), self.head_dim
        total = 0
        for heads, ffn in zip(self.heads, self.ffn):
            width = len(heads) * hd
            total += 3 * (d * width + width) + (width * d + d) + 2 * d  # q, k, v, output, LayerNorm
            total += (d * len(ffn) + len(ffn)) + (len(ffn) * d + d) + 2 * d  # FFN in, out, LayerNorm
        return total


def full_layout(dims: BaseDims) -> Layout:
    """The unpruned base as a layout (for size ratios)."""
    return Layout.from_masks({}, dims)


def masks_summary(masks: dict[str, torch.Tensor], layout: Layout) -> dict:
    """The human-readable masks.json: per layer kept or not, kept heads, kept FFN count; hidden count."""
    base = layout.base
    per_layer = []
    for i in range(base["layers"]):
        entry = {"index": i, "kept": i in layout.layers}
        if entry["kept"]:
            j = layout.layers.index(i)
            entry.update(heads=layout.heads[j], ffn_kept=len(layout.ffn[j]))
        per_layer.append(entry)
    full = full_layout(layout.base_dims)
    return {
        "masks": sorted(masks),
        "layers": per_layer,
        "hidden_kept": len(layout.hidden),
        "sizes": layout.sizes(),
        "base_sizes": dict(base),
        "uniform": layout.uniform,
        "stock_shape": layout.stock,
        "encoder_params": layout.encoder_params(),
        "base_encoder_params": full.encoder_params(),
    }

