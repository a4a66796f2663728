"""Coverage of a trimmed vocabulary: how much held-out text still tokenizes exactly as the base does.

For each quality data set (per language for bitext: the English side and the other side apart; for
BEIR queries and documents together), the fraction of texts whose ids from the model's tokenizer, mapped
through its vocab map, equal the base tokenizer's ids (whole texts, no truncation, no special tokens),
and the fraction of the base's tokens that survived. Text the trimming corpus did not cover tokenizes
into smaller pieces or <unk>: that is what coverage below 100% means.

Example:
    bgeprune bench out/me5-trimmed --compare /models/me5-small --bitext ../shared/data/bitext_dev --no-speed
"""

from __future__ import annotations


def _ids(model, texts: list[str]) -> list[list[int]]:
    return model.tokenizer(texts, add_special_tokens=False)["input_ids"]


def text_coverage(model, base, texts: list[str]) -> dict:
    """{texts, exact (fraction tokenized as the base does), tokens_kept (fraction of the base's tokens kept)}."""
    if not texts:
        return {"texts": 0, "exact": 1.0, "tokens_kept": 1.0}
    vmap = model.vocab_map
    ours = [[vmap.new_to_old[i] for i in ids] for ids in _ids(model, texts)]
    theirs = _ids(base, texts)
    kept = set(vmap.new_to_old)
    tokens = sum(map(len, theirs))
    return {"texts": len(texts), "exact": sum(a == b for a, b in zip(ours, theirs)) / len(texts),
            "tokens_kept": sum(i in kept for ids in theirs for i in ids) / tokens if tokens else 1.0}


def coverage(models: dict, beir: list, bitext: list) -> dict | None:
    """Per data set (and per bitext language) coverage of the model's vocabulary; None when it was not trimmed
    or there is no base to compare with."""
    model, base = models.get("model"), models.get("base")
    if model is None or base is None or model.vocab_map is None:
        return None
    result = {}
    if bitext:  # English is one language however many files pair with it
        result["bitext en (every file's English side)"] = text_coverage(
            model, base, [t for data in bitext for t in data.english])
    for data in bitext:
        result[f"bitext {data.name}"] = text_coverage(model, base, data.other)  # the file's name is the language
    for data in beir:
        result[f"{data.name} (queries + documents)"] = text_coverage(
            model, base, list(data.queries.values()) + list(data.corpus.values()))
    return result
