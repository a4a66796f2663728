"""Learned hard-concrete gates, their expected model size, and the Lagrangian that steers it (docs/design.md, Masks).

`MaskSet` holds one `log_alpha` per prunable unit (layer, heads, ffn, hidden). `expected_sizes`
turns keep probabilities into expected unit counts and an expected encoder parameter count that
counts every matrix (q, k, v, attention output, FFN in and out, biases, LayerNorms), equal to
`Layout.encoder_params` when the probabilities are 0/1. `Lagrangian` adds, per mask type and per
row, `λ1 (ŝ − t) + λ2 (ŝ − t)²` where ŝ is the expected fraction removed and t the target fraction
at this step; the λ's are maximised by their own optimizer group, so a model below its target
sparsity is pushed to prune more, and one above it to prune less.

Example:
    bgeprune train recipes/smoke.toml       # learns a MaskSet; finalize-masks ranks its log_alpha
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import BaseDims, TargetSection
from ..pruning.masks import LOG_ALPHA_CLAMP, finalize, full_layout, gate_noise, gates_from_noise, keep_prob, mask_shapes


class MaskSet(nn.Module):
    """log_alpha parameters for the learned mask types; absent types mean "keep everything"."""

    def __init__(self, dims: BaseDims, types: list[str], init: float):
        super().__init__()
        self.dims = dims
        shapes = mask_shapes(dims)
        self.log_alpha = nn.ParameterDict({t: nn.Parameter(torch.full(shapes[t], float(init))) for t in types})

    @property
    def types(self) -> list[str]:
        return list(self.log_alpha.keys())

    def noise(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One step's noise per type: every micro-batch (and every rank) of the step uses this draw."""
        return {t: gate_noise(a.shape, generator, a.device) for t, a in self.log_alpha.items()}

    def sample(self, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gate sample per type from `noise(generator)`, shared by the whole batch (differentiable in log_alpha)."""
        return {t: gates_from_noise(a, noise[t]) for t, a in self.log_alpha.items()}

    def keep_probs(self) -> dict[str, torch.Tensor]:
        return {t: keep_prob(a) for t, a in self.log_alpha.items()}

    @torch.no_grad()
    def clamp_(self) -> None:
        for a in self.log_alpha.values():
            a.clamp_(-LOG_ALPHA_CLAMP, LOG_ALPHA_CLAMP)

    @torch.no_grad()
    def finalized(self, target: TargetSection) -> dict[str, torch.Tensor]:
        """Binary masks by the finalize rule (what `finalize-masks` will produce from these gates)."""
        return finalize({t: a.detach().float().cpu() for t, a in self.log_alpha.items()}, target, self.dims)

    def scores(self) -> dict[str, torch.Tensor]:
        return {t: a.detach().float().cpu().contiguous() for t, a in self.log_alpha.items()}


def expected_sizes(probs: dict[str, torch.Tensor], dims: BaseDims) -> dict[str, torch.Tensor]:
    """Expected counts per type (heads and FFN: per kept layer) and expected encoder parameters.

    Per layer i, with d = Σ p_hidden and head size h:
        p_layer[i] · ( Σ_h p_head[i,h] · h·(4d + 3) + 3d  +  Σ_f p_ffn[i,f] · (2d + 1) + 3d )
    i.e. q, k, v (weights and biases), the attention output weight, the output bias and LayerNorm,
    then FFN in (weights, biases), FFN out weights, its bias and LayerNorm.
    """
    device = next(iter(probs.values())).device if probs else "cpu"
    ones = {name: torch.ones(shape, device=device) for name, shape in mask_shapes(dims).items()}
    p = {name: probs.get(name, ones[name]) for name in ones}
    d = p["hidden"].sum()
    heads = p["heads"].sum(1)
    ffn = p["ffn"].sum(1)
    per_layer = heads * dims.head_dim * (4 * d + 3) + 3 * d + ffn * (2 * d + 1) + 3 * d
    layers = p["layer"].sum()
    # Heads and FFN per layer are averaged over the layers expected to stay (a dropped layer's units
    # do not count), so after finalizing they read exactly as the kept architecture.
    weight = p["layer"] / layers.clamp(min=1e-9)
    return {"layers": layers, "heads": (weight * heads).sum(), "ffn": (weight * ffn).sum(), "hidden": d,
            "encoder_params": (p["layer"] * per_layer).sum()}


class Lagrangian(nn.Module):
    """Per-type, per-row constraint terms with learnable multipliers (maximised; start at 0).

    Each type's term is `units · mean_rows[λ1 (ŝ − t) + λ2 (ŝ − t)²]` (units = gates per row).

    Targeted mode: the rows are each layer's heads and FFN units, all layers, all hidden dims; the
    target fraction removed per row is 1 − target/base. Sparsity mode: one row, the expected
    encoder parameters, against the recipe's global sparsity. Targets ramp linearly from 0 over
    `warmup` steps so that early training is not a cliff.
    """

    def __init__(self, target: TargetSection, dims: BaseDims, types: list[str], warmup: int):
        super().__init__()
        self.target, self.dims, self.warmup = target, dims, warmup
        self.final: dict[str, float] = {}
        rows: dict[str, int] = {}
        if target.mode == "sparsity":
            self.final["params"] = float(target.sparsity)
            rows["params"] = 1
        else:
            wanted = {"layer": (target.layers, dims.layers, 1), "heads": (target.heads, dims.heads, dims.layers),
                      "ffn": (target.ffn, dims.ffn, dims.layers), "hidden": (target.hidden, dims.hidden, 1)}
            for t in types:
                keep, base, n_rows = wanted[t]
                self.final[t] = 1.0 - (keep if keep is not None else base) / base
                rows[t] = n_rows
        # Units per row. The gradient a row's term sends to each of its gates is divided by this (ŝ is a
        # mean), while the distillation gradient on a gate is not; scaling the term by it gives every
        # gate the same pressure per unit of λ, so a 4096-unit FFN row converges as fast as 24 layers.
        self.units = {k: float(mask_shapes(dims)[k][-1]) for k in self.final if k != "params"}
        if "params" in self.final:
            self.units["params"] = float(sum(math.prod(mask_shapes(dims)[t]) for t in types))
            self.base_params = full_layout(dims).encoder_params()
        self.lambda_1 = nn.ParameterDict({k: nn.Parameter(torch.zeros(n)) for k, n in rows.items()})
        self.lambda_2 = nn.ParameterDict({k: nn.Parameter(torch.zeros(n)) for k, n in rows.items()})

    def target_at(self, step: int) -> dict[str, float]:
        ramp = 1.0 if self.warmup == 0 else min(1.0, step / self.warmup)
        return {k: v * ramp for k, v in self.final.items()}

    def sparsity(self, probs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Expected fraction removed, per row of each constrained quantity."""
        if "params" in self.final:
            expected = expected_sizes(probs, self.dims)["encoder_params"]
            return {"params": (1 - expected / self.base_params).reshape(1)}
        # heads and ffn: one row per layer; layer and hidden: the whole vector is one row.
        return {t: 1 - probs[t].mean(1) if probs[t].dim() == 2 else (1 - probs[t].mean()).reshape(1)
                for t in self.final}

    def forward(self, probs: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The penalty (add to the loss) and, per constrained quantity, expected − target sparsity."""
        targets = self.target_at(step)
        penalty = torch.zeros((), device=next(iter(probs.values())).device)
        gaps = {}
        for name, s_hat in self.sparsity(probs).items():
            gap = s_hat - targets[name]
            l1, l2 = self.lambda_1[name].to(gap.device), self.lambda_2[name].to(gap.device)
            penalty = penalty + self.units[name] * (l1 * gap + l2 * gap.pow(2)).mean()
            gaps[name] = float(gap.detach().mean())
        return penalty, gaps
