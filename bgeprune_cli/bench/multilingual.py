"""The multilingual views of bitext data: the worst language beside the mean, cross-lingual retrieval
(each translation as a query against the English side as the corpus), and the same retrieval with the
pruned model's queries against the base's English index.

bge-m3 is kept for every language, not the average, so a summary names its worst language; and a user
who keeps the base's index encodes only queries with the pruned model, in any language.

Example:
    python -c "import torch; from bgeprune_cli.bench.multilingual import retrieval_metrics; \
print(retrieval_metrics(torch.eye(3), ['a', 'b', 'c']))"
"""

from __future__ import annotations

import math

import torch

RANK_CUTOFF = 10  # nDCG@10


def retrieval_metrics(scores: torch.Tensor, documents: list[str]) -> dict[str, float]:
    """nDCG@10 and accuracy (the right document first) of query i against documents, where document i is
    the relevant one, and so is every document with the same text (translation files repeat strings).

    One relevant document per query: nDCG@10 is 1 / log2(1 + rank) for a rank within 10, else 0. Ties
    count against the query (a document scoring as high as the relevant one ranks above it).
    """
    ndcg = accuracy = 0.0
    for i, row in enumerate(scores.float()):
        relevant = torch.tensor([d == documents[i] for d in documents])
        best = row[relevant].max()
        rank = 1 + int((row[~relevant] >= best).sum())
        ndcg += 1 / math.log2(1 + rank) if rank <= RANK_CUTOFF else 0.0
        accuracy += rank == 1
    n = len(documents)
    return {"ndcg@10": ndcg / n, "accuracy": accuracy / n}


def worst_language(bitext: dict, mode: str, names: list[str], view: str = "modes",
                   metric: str = "accuracy") -> dict:
    """Per model the lowest `metric` over the bitext sets and the set it is in; for "ratio" the lowest
    retention (model over base) and its set, which need not be the same. A set is named as bench names
    it (its file's name: `vi`), since the field inside the file may be the same for every language (`xx`)."""
    out = {}
    for name in names:
        worst = min(bitext, key=lambda k: bitext[k][view][mode][name][metric])
        out[name] = {metric: bitext[worst][view][mode][name][metric], "language": worst}
    ratios = [k for k in bitext if bitext[k][view][mode].get("ratio", {}).get(metric) is not None]
    if ratios:
        worst = min(ratios, key=lambda k: bitext[k][view][mode]["ratio"][metric])
        out["ratio"] = {metric: bitext[worst][view][mode]["ratio"][metric], "language": worst}
    return out


def _mean(dicts: list[dict]) -> dict:
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}


def summarize_bitext(bitext: dict, modes: list[str], names: list[str], with_ratio) -> dict:
    """Over the languages of `bitext` (bench's per-set results): the worst language of matching
    accuracy and of cross-lingual nDCG@10, the cross-lingual mean, and (when measured) the pruned
    queries against the base's index, mean and worst. `with_ratio` adds model / base as bench does."""
    sets = list(bitext.values())
    summary = {
        "bitext_worst": {mode: worst_language(bitext, mode, names) for mode in modes},
        "cross_lingual_mean": {mode: with_ratio({name: _mean([s["cross_lingual"][mode][name] for s in sets])
                                                 for name in names}) for mode in modes},
        "cross_lingual_worst": {mode: worst_language(bitext, mode, names, "cross_lingual", "ndcg@10")
                                for mode in modes}}
    if all("asymmetric" in s for s in sets):
        crossed = {name: s["asymmetric"]["model_queries_base_docs"] for name, s in bitext.items()}
        summary["bitext_asymmetric"] = {"model_queries_base_docs": crossed_summary(
            crossed, summary["cross_lingual_mean"]["dense"]["base"])}
    return summary


def crossed_summary(crossed: dict[str, dict], base: dict) -> dict:
    """Over the languages of `crossed` (language -> the pruned queries × the base's index: metrics and ratio):
    the mean metrics, their ratio to the base's own mean (`base`), and the language of the lowest nDCG@10 ratio."""
    metrics = _mean([c["metrics"] for c in crossed.values()])
    worst = min(crossed, key=lambda name: crossed[name]["ratio"].get("ndcg@10", 0.0))
    return {"metrics": metrics, "ratio": {k: v / base[k] for k, v in metrics.items() if base.get(k)},
            "worst": {"ndcg@10": crossed[worst]["ratio"].get("ndcg@10", 0.0), "language": worst}}
