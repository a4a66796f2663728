"""bench's headline: the speed grid point it is read at, and the quality metric that stands for a model.

The speed headline is the grid point batch 32 × 128 tokens when the grid has it (else its largest
point). The quality headline is the first of: the first BEIR set's nDCG@10, mean bitext accuracy,
and (no data given) top-10 neighbour overlap with the base, which is agreement, not quality.

Example:
    python -c "from bgeprune_cli.bench.headline import quality_headline; \
print(quality_headline({'bitext_mean': {'dense': {'model': {'accuracy': 0.9}}}}))"
"""

from __future__ import annotations

from dataclasses import dataclass

HEADLINE = (32, 128)
AGREEMENT_METRIC = "top10_overlap"


@dataclass(frozen=True)
class QualityHeadline:
    label: str  # what the numbers are, for people: "pydocs nDCG@10"
    metric: str  # the key of the number in each entry's values: "ndcg@10"
    modes: dict  # retrieval mode -> {entry key: {metric: value}, "ratio": {...}, "ratios": {entry: {...}}}

    @property
    def is_quality(self) -> bool:
        """False for agreement with the base, which says how alike two models are, not how good."""
        return self.metric != AGREEMENT_METRIC

    def value(self, entry: str, mode: str = "dense") -> float:
        return self.modes[mode][entry][self.metric]

    def ratios(self, entry: str, mode: str = "dense") -> dict | None:
        """The entry's values over the base's, every metric of the mode (None where there is no base)."""
        values = self.modes[mode]
        return values.get("ratio") if entry == "model" else values.get("ratios", {}).get(entry)


def headline_point(points: list[dict]) -> dict | None:
    if not points:
        return None
    exact = [p for p in points if (p["batch"], p["length"]) == HEADLINE]
    return exact[0] if exact else max(points, key=lambda p: (p["batch"] * p["length"], p["length"]))


def quality_headline(quality: dict) -> QualityHeadline | None:
    if quality.get("beir"):
        name, data = next(iter(quality["beir"].items()))
        return QualityHeadline(f"{name} nDCG@10", "ndcg@10", data["modes"])
    if quality.get("bitext_mean"):
        return QualityHeadline("bitext accuracy (mean)", "accuracy", quality["bitext_mean"])
    if quality.get("agreement"):  # the base agrees with itself fully
        modes = {mode: {"model": {AGREEMENT_METRIC: a.get(AGREEMENT_METRIC, 0.0)}, "base": {AGREEMENT_METRIC: 1.0}}
                 for mode, a in quality["agreement"]["modes"].items()}
        for values in modes.values():
            values["ratio"] = values["model"]
        return QualityHeadline("top-10 neighbour overlap with the base", AGREEMENT_METRIC, modes)
    return None


def entries_headline(models: dict, point: dict | None, memory: dict, quality: QualityHeadline | None) -> dict:
    """Per (model, backend) entry at the headline point: throughput, its ratios, memory, the quality headline."""
    entries = {}
    for key, m in models.items():
        row = {"label": m.label, "backend": m.backend}
        if point:
            row.update({k: point[key][k] for k in ("sentences_per_s", "p50_ms", "p99_ms", "speedup_vs_base",
                                                   "speedup_vs_base_same_backend") if k in point[key]})
        if key in memory and "model_rss_bytes" in memory[key]:
            row["model_rss_bytes"] = memory[key]["model_rss_bytes"]
        if quality and quality.is_quality:
            row["quality"] = quality.value(key)
            ratios = quality.ratios(key)
            if ratios is not None:
                row["quality_vs_base"] = ratios.get(quality.metric)
        entries[key] = row
    return entries


def plot_points(models: dict, point: dict | None, quality: QualityHeadline | None) -> list[dict]:
    """report.png's points: one per entry and retrieval mode, throughput against the quality headline."""
    if point is None or quality is None:
        return []
    return [{"role": role, "label": models[role].label, "mode": mode, "x": point[role]["sentences_per_s"],
             "y": values[role][quality.metric]} for mode, values in quality.modes.items() for role in models
            if role in values]
