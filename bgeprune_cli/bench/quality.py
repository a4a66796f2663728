"""Quality of the compared models, per retrieval mode, on the same data in the same run.

  - BEIR sets: nDCG@10, MRR@10 and Recall@100, computed by sentence-transformers'
    `InformationRetrievalEvaluator.compute_metrics` from each mode's score matrix (so sparse and
    ColBERT rankings use the same metric code as dense ones).
  - Bitext: nearest-neighbour matching accuracy in both directions (the definition of
    sentence-transformers' `TranslationEvaluator`: a match is right when the text found equals
    the true translation), and cross-lingual retrieval: each translation as a query against the
    English side as the corpus (nDCG@10, accuracy), also with the pruned model's queries against the
    base's English vectors (its index); per language, their mean, and the worst language
    (bench/multilingual.py).
  - Index compatibility: each model's queries against the other's documents, in every mode the heads
    allow (bench/index_compat.py).
  - Agreement with the base: score-matrix Spearman and top-10 neighbour overlap per mode, plus dense
    cosine when the dimensions match (`models/agreement.py`).
Modes: dense always; sparse, ColBERT and their combination (`m3`, FlagEmbedding's
colbert+sparse+dense) when every compared model has bge-m3 head files.

Example:
    bgeprune bench out/bge-m3-50pct --compare BAAI/bge-m3 --beir data/scifact --bitext ../shared/data/bitext_dev
"""

from __future__ import annotations

import torch

from ..models import m3
from ..models.agreement import agreement, score_agreement
from ..models.m3 import M3Output, mode_scores
from ..ui import Progress
from .eval_data import BeirSet, BitextSet
from .index_compat import DIRECTIONS, cross_directions, heads_by_mode, in_base_ids, summarize_heads
from .multilingual import retrieval_metrics, summarize_bitext
from .widths import at_widths, summarize_widths, truncated_scores

IR_METRICS = {"ndcg@10": ("ndcg@k", 10), "mrr@10": ("mrr@k", 10), "recall@100": ("recall@k", 100)}
AGREEMENT_TEXTS = 500


def ir_evaluator(data: BeirSet):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(data.queries, data.corpus, data.relevant, ndcg_at_k=[10], mrr_at_k=[10],
                                         precision_recall_at_k=[100], accuracy_at_k=[1], map_at_k=[10],
                                         name=data.name, write_csv=False)


def ir_metrics(evaluator, scores: torch.Tensor) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100 of a [evaluator.queries, evaluator.corpus] score matrix.

    Each query passes every document scoring at least its 100th best (ties included), so the
    evaluator's own (-score, corpus id) ordering decides ties exactly as it does for dense models.
    """
    k = min(100, scores.shape[1])
    floor = scores.topk(k, dim=1).values[:, -1:]
    hits = []
    for row, keep in zip(scores.tolist(), (scores >= floor).tolist()):
        hits.append([{"corpus_id": evaluator.corpus_ids[j], "score": s} for j, (s, k_) in enumerate(zip(row, keep))
                     if k_])
    computed = evaluator.compute_metrics(hits)
    return {name: float(computed[group][at]) for name, (group, at) in IR_METRICS.items()}


def bitext_accuracy(scores: torch.Tensor, english: list[str], other: list[str]) -> dict[str, float]:
    """Accuracy of matching each English text to its translation and back ([en, other] scores)."""
    forward = sum(other[j] == other[i] for i, j in enumerate(scores.argmax(1).tolist())) / len(english)
    backward = sum(english[j] == english[i] for i, j in enumerate(scores.argmax(0).tolist())) / len(other)
    return {"en_to_xx": forward, "xx_to_en": backward, "accuracy": (forward + backward) / 2}


def modes_agreement(modes: list[str], base: M3Output, model: M3Output) -> dict:
    base_scores, model_scores = mode_scores(modes, base, base), mode_scores(modes, model, model)
    return {mode: agreement(base.dense, model.dense) if mode == "dense" else
            {**score_agreement(base_scores[mode], model_scores[mode]), "texts": len(base)} for mode in modes}


def _ratio(model: dict, base: dict) -> dict:
    return {k: model[k] / base[k] for k, v in model.items() if isinstance(v, float) and base.get(k)}


def asymmetric_scores(model: tuple[M3Output, M3Output], base: tuple[M3Output, M3Output]) -> dict[str, torch.Tensor]:
    """Dense scores across the two models, per direction (bench/index_compat.py; the dense widths must match)."""
    return {direction: scores["dense"] for direction, scores in cross_directions(["dense"], model, base).items()}


def evaluate(models: dict, beir: list[BeirSet], bitext: list[BitextSet], agreement_texts: list[str],
             max_length: int, batch_size: int, dims: list[int] | None = None) -> dict:
    """Every metric for every model (`models`: name -> BenchModel, "model" first, "base" optional); with
    `dims`, dense quality again at each of those output widths (bench/widths.py).

    Each model encodes with its own prompts: queries with its query prompt, documents with its passage
    prompt, both sides of a bitext pair as queries (a symmetric task, as multilingual-e5 advises).
    """
    modes = ["dense"] + (list(m3.HEAD_MODES) if all(m.heads is not None for m in models.values()) else [])
    with_heads = len(modes) > 1
    evaluators = [ir_evaluator(data) for data in beir]
    sizes = ([len(e.queries) + len(e.corpus) for e in evaluators] + [2 * len(b.english) for b in bitext]
             + ([len(agreement_texts)] if "base" in models else []))
    total = sum(-(-size // batch_size) for size in sizes) * len(models)
    result: dict = {"modes": modes, "max_length": max_length, "beir": {}, "bitext": {}}
    if not with_heads and any(m.heads is not None for m in models.values()):
        result["note"] = "sparse and ColBERT not evaluated: not every compared model has bge-m3 head files"
    compatible = "base" in models and models["model"].hidden == models["base"].hidden
    vocab_map = getattr(models.get("model"), "vocab_map", None)  # sparse ids in the base's, across the two

    with Progress("quality", total) as progress:
        def encode(queries: list[str], passages: list[str]) -> dict[str, tuple[M3Output, M3Output]]:
            """Per model: its (queries, passages) outputs, one encode call each model."""
            encoded = {}
            for name, m in models.items():
                both = m.encode(m.prompts.queries(queries) + m.prompts.passages(passages),
                                min(max_length, m.pooling.max_seq_length), batch_size, with_heads, progress)
                encoded[name] = (_rows(both, 0, len(queries)), _rows(both, len(queries), None))
            return encoded

        for data, evaluator in zip(beir, evaluators):
            encoded = encode(list(evaluator.queries), list(evaluator.corpus))
            scores = {name: mode_scores(modes, *pair) for name, pair in encoded.items()}
            entry = {"queries": len(evaluator.queries), "corpus": len(evaluator.corpus), "modes": {
                mode: _with_ratio({name: ir_metrics(evaluator, s[mode]) for name, s in scores.items()})
                for mode in modes}}
            if compatible:  # each model's queries against the other's documents, in every mode
                crossed = cross_directions(modes, encoded["model"], encoded["base"], vocab_map)
                per_direction = {direction: {mode: {"metrics": (metrics := ir_metrics(evaluator, cross)),
                                                    "ratio": _ratio(metrics, entry["modes"][mode]["base"])}
                                             for mode, cross in per_mode.items()}
                                 for direction, per_mode in crossed.items()}
                entry["asymmetric"] = {direction: v["dense"] for direction, v in per_direction.items()}
                if with_heads:
                    entry["asymmetric_modes"] = heads_by_mode(per_direction)
            if dims:
                def retrieval_at(name: str, width: int, pair=encoded, e=evaluator) -> dict:
                    return ir_metrics(e, truncated_scores(pair[name][0].dense, pair[name][1].dense, width))
                entry["widths"] = at_widths(dims, list(models), retrieval_at, entry["modes"]["dense"])
            result["beir"][data.name] = entry
        for data in bitext:
            n = len(data.english)
            halves = {name: (_rows(q, 0, n), _rows(q, n, None))  # (English, translations)
                      for name, (q, _) in encode(data.english + data.other, []).items()}
            scores = {name: mode_scores(modes, english, other) for name, (english, other) in halves.items()}
            crossed = {name: mode_scores(modes, other, english) for name, (english, other) in halves.items()}
            entry = {"language": data.language, "pairs": n, "modes": {
                mode: _with_ratio({name: bitext_accuracy(s[mode], data.english, data.other)
                                   for name, s in scores.items()}) for mode in modes}}
            entry["cross_lingual"] = {mode: _with_ratio({name: retrieval_metrics(s[mode], data.english)
                                                         for name, s in crossed.items()}) for mode in modes}
            if compatible:  # the pruned model's translations as queries against the base's English index
                crossed = mode_scores(modes, in_base_ids(halves["model"][1], vocab_map), halves["base"][0])
                per_mode = {mode: {DIRECTIONS[0]: {
                    "metrics": (metrics := retrieval_metrics(cross, data.english)),
                    "ratio": _ratio(metrics, entry["cross_lingual"][mode]["base"])}} for mode, cross in crossed.items()}
                entry["asymmetric"] = per_mode.pop("dense")
                if with_heads:
                    entry["asymmetric_modes"] = per_mode
            if dims:
                def matching_at(name: str, width: int, h=halves, d=data) -> dict:
                    return bitext_accuracy(truncated_scores(h[name][0].dense, h[name][1].dense, width), d.english,
                                           d.other)
                entry["widths"] = at_widths(dims, list(models), matching_at, entry["modes"]["dense"])
            result["bitext"][data.name] = entry
        if "base" in models:
            encoded = encode([], agreement_texts)
            result["agreement"] = {"texts": len(agreement_texts),
                                   "modes": modes_agreement(modes, encoded["base"][1], encoded["model"][1])}
    if bitext:
        result["bitext_mean"] = {mode: _with_ratio({name: {"accuracy": sum(
            b["modes"][mode][name]["accuracy"] for b in result["bitext"].values()) / len(bitext)} for name in models})
            for mode in modes}
        result.update(summarize_bitext(result["bitext"], modes, list(models), _with_ratio))
        if with_heads and compatible:
            result["bitext_asymmetric_modes"] = summarize_heads(result["bitext"], result["cross_lingual_mean"])
        if dims:
            result["bitext_widths"] = summarize_widths(result["bitext"], dims, list(models))
    if dims:
        result["dims"] = list(dims)
    if "base" in models and not compatible:
        result["asymmetric_note"] = ("index compatibility not measured: the pruned model's output dimension differs "
                                     "from the base's (hidden was pruned), so their vectors cannot share an index")
    return result


def _rows(output: M3Output, start: int, stop: int | None) -> M3Output:
    return M3Output(output.dense[start:stop], output.lexical[start:stop], output.colbert[start:stop])


def _with_ratio(per_model: dict[str, dict]) -> dict:
    """`ratio`: model / base; `ratios`: every other entry (other backends) / base."""
    if "base" in per_model:
        others = {name: _ratio(v, per_model["base"]) for name, v in per_model.items() if name not in ("model", "base")}
        per_model["ratio"] = _ratio(per_model["model"], per_model["base"])
        if others:
            per_model["ratios"] = others
    return per_model
