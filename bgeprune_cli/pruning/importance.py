"""Training-free importance of every unit: what `bgeprune magnitude` ranks by, and where training can start.

Heads and FFN units are scored by weight magnitude (the norms of the rows and columns they own),
hidden dims by mean activation magnitude and layers by block influence (1 − cos(input, output)) on
the probe text. `log_alpha_from_importance` turns scores into initial gate logits that rank units
as the scores do (`train.importance_init`), so training starts near a good mask instead of a
uniform one.

Example:
    bgeprune magnitude recipes/smoke.toml            # the scores, as a train-run for finalize-masks
"""

from __future__ import annotations

import torch

from ..config import BaseDims


@torch.no_grad()
def importance_scores(model, adapter, dims: BaseDims, wanted: list[str],
                      batches: list[dict]) -> dict[str, torch.Tensor]:
    """Per mask type, a score per unit (higher = keep): `wanted` of layer, heads, ffn, hidden."""
    layers = model.get_submodule(adapter.layers)
    scores: dict[str, torch.Tensor] = {}
    if "heads" in wanted or "ffn" in wanted:
        heads, ffn = [], []
        for layer in layers:
            per_head = torch.zeros(dims.heads)
            per_unit_in = torch.zeros(dims.ffn)
            per_unit_out = torch.zeros(dims.ffn)
            for module, (out_mask, in_mask) in adapter.layer_linears.items():
                weight = layer.get_submodule(module).weight.float()
                if out_mask == "heads":
                    per_head += weight.pow(2).sum(1).view(dims.heads, -1).sum(1)
                if in_mask == "heads":
                    per_head += weight.pow(2).sum(0).view(dims.heads, -1).sum(1)
                if out_mask == "ffn":
                    per_unit_in += weight.pow(2).sum(1)
                if in_mask == "ffn":
                    per_unit_out += weight.pow(2).sum(0)
            heads.append(per_head.sqrt())
            ffn.append((per_unit_in * per_unit_out).sqrt())
        scores["heads"], scores["ffn"] = torch.stack(heads), torch.stack(ffn)
    if "layer" in wanted or "hidden" in wanted:
        influence = torch.zeros(dims.layers)
        activation = torch.zeros(dims.hidden)
        for batch in batches:
            states = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].bool()
            for i in range(dims.layers):
                before, after = states[i][mask].float(), states[i + 1][mask].float()
                influence[i] += (1 - torch.nn.functional.cosine_similarity(before, after, dim=-1)).mean()
            activation += sum(s[mask].float().abs().mean(0) for s in states)
        scores["layer"], scores["hidden"] = influence, activation
    return {name: scores[name].contiguous() for name in wanted}


def log_alpha_from_importance(scores: torch.Tensor, init: float, spread: float) -> torch.Tensor:
    """Gate logits around `init`, ordered within each row as `scores` are: the least important unit of a
    row at init − spread, the most important at init + spread, evenly by rank (ties by index)."""
    flat = scores.reshape(-1, scores.shape[-1]).float()
    n = flat.shape[-1]
    # argsort of a stable argsort gives each unit its rank; a stable sort keeps ties in index order.
    ranks = torch.argsort(torch.argsort(flat, dim=-1, stable=True), dim=-1, stable=True).float()
    centred = ranks / max(1, n - 1) * 2 - 1 if n > 1 else torch.zeros_like(ranks)
    return (init + spread * centred).reshape(scores.shape)
