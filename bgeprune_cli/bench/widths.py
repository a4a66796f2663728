"""Quality at smaller output widths (`bench --dims`): every model's dense vectors cut to their first k dims
and L2-normalised, as sentence-transformers' `truncate_dim` (and a user slicing FlagEmbedding's vectors)
gives them.

The base truncated the same way is the baseline a user has today; a student trained with
`distill.matryoshka_dims` should keep far more. Per width and set: each model's metrics, the model's ratio
to the base at the same width (`ratio`), and each model's share of its own full-width value (`of_full`).

Example:
    bgeprune bench out/me5-matryoshka --compare me5-small --beir ../shared/data/pydocs --dims 192,96
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .multilingual import worst_language


def check_dims(dims: list[int], widths: dict[str, int]) -> None:
    """Every width must be positive and fit every compared model (`widths`: label -> output width)."""
    if any(k < 1 for k in dims):
        raise UsageError(f"--dims takes positive widths like 256,128, not {','.join(map(str, dims))}")
    for label, width in widths.items():
        wide = [k for k in dims if k > width]
        if wide:
            raise UsageError(f"--dims {','.join(map(str, wide))}: wider than {label}'s {width}-dim vectors; "
                             f"use widths up to {width}")


def truncate(dense: torch.Tensor, width: int) -> torch.Tensor:
    return F.normalize(dense[:, :width].float(), dim=-1)


def truncated_scores(queries: torch.Tensor, docs: torch.Tensor, width: int) -> torch.Tensor:
    return truncate(queries, width) @ truncate(docs, width).T


def _ratio(model: dict, base: dict) -> dict:
    return {k: model[k] / base[k] for k, v in model.items() if isinstance(v, float) and base.get(k)}


def at_widths(dims: list[int], names: list[str], metric, full: dict[str, dict]) -> dict:
    """{width: {name: metrics, "ratio": model/base, "of_full": {name: metrics/full}}} for one set.

    `metric(name, width)` scores one model at one width; `full[name]` is its full-width metrics.
    """
    result = {}
    for width in dims:
        entry: dict = {name: metric(name, width) for name in names}
        if "base" in entry:
            entry["ratio"] = _ratio(entry["model"], entry["base"])
        entry["of_full"] = {name: _ratio(entry[name], full[name]) for name in names}
        result[str(width)] = entry
    return result


def summarize_widths(bitext: dict, dims: list[int], names: list[str]) -> dict:
    """Per width over the bitext sets: each model's mean accuracy (and its share of the full-width mean),
    and the worst language: the lowest accuracy per model and the lowest ratio to the base."""
    summary = {}
    for width in map(str, dims):
        per_set = {set_name: data["widths"][width] for set_name, data in bitext.items()}
        mean = {name: {"accuracy": sum(s[name]["accuracy"] for s in per_set.values()) / len(per_set)}
                for name in names}
        full = {name: sum(d["modes"]["dense"][name]["accuracy"] for d in bitext.values()) / len(bitext)
                for name in names}
        entry = {"mean": mean, "mean_of_full": {name: mean[name]["accuracy"] / full[name] for name in names
                                                if full[name]}}
        if "base" in names:
            entry["mean_ratio"] = _ratio(mean["model"], mean["base"])
        entry["worst"] = worst_language(bitext, width, names, view="widths")
        summary[width] = entry
    return summary
