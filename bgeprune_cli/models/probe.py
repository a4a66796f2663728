"""Probe batches and the outputs compared across masked, pruned and exported models.

The probe is padded batches of mixed lengths plus a batch of one, so padding bugs show up.
Outputs are restricted to the kept hidden dims, so a masked model (zeros at pruned dims) and a
pruned model (those dims removed) compare directly.

Example:
    python -c "from bgeprune_cli.models.probe import probe_texts; print(len(probe_texts()))"
"""

from __future__ import annotations

from pathlib import Path

import torch

PROBE_TEXT = Path(__file__).parents[1] / "resources" / "probe.txt"  # also builtin:probe, the smoke data


def probe_texts(path: str | Path | None = None) -> list[str]:
    lines = Path(path or PROBE_TEXT).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def probe_batches(tokenizer, texts: list[str], max_length: int, batch_size: int = 8,
                  single_first: bool = True) -> list[dict]:
    """Padded batches of `texts`; with `single_first` the first text also runs alone, first
    (so embeddings have 1 + len(texts) rows; `per_text` drops that extra row)."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    if single_first:
        batches.insert(0, texts[:1])
    return [dict(tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
            for chunk in batches]


@torch.no_grad()
def model_outputs(model, batches: list[dict], pooling, hidden: list[int] | None = None,
                  heads=None) -> dict[str, torch.Tensor]:
    """last_hidden (real tokens only), pooler, embedding; each on the kept hidden dims.

    With bge-m3 `heads` also the sparse token weights of every real token with its token id (lexical
    weights are keyed by id; a trimmed model's ids are mapped back before comparing) and the ColBERT
    vectors of every real token after CLS. For a masked model (`hidden` given) the heads are the unpruned
    ones, run on the full-width states with the hidden mask gating ColBERT's output, and only the
    kept ColBERT dims are returned: what the pruned model's sliced heads must reproduce.
    """
    keep = torch.tensor(hidden) if hidden is not None else None
    hidden_z = None
    if keep is not None and heads is not None:
        hidden_z = torch.zeros(heads.hidden).index_fill(0, keep, 1.0)
    tokens, pooled, embeddings, sparse, token_ids, colbert = [], [], [], [], [], []
    for batch in batches:
        out = model(**batch)
        states = full = out.last_hidden_state.float()
        pool = out.pooler_output.float() if out.pooler_output is not None else None
        if keep is not None:
            states = states.index_select(-1, keep)
            pool = pool.index_select(-1, keep) if pool is not None else None
        mask = batch["attention_mask"].bool()
        tokens.append(states[mask])
        if pool is not None:
            pooled.append(pool)
        embeddings.append(pooling.pool(states, batch["attention_mask"]))
        if heads is not None:
            sparse.append(heads.token_weights(full)[mask])
            token_ids.append(batch["input_ids"][mask])
            vectors = heads.colbert_vectors(full, batch["attention_mask"], hidden_z)[mask[:, 1:]]
            colbert.append(vectors.index_select(-1, keep) if hidden_z is not None and
                           vectors.shape[-1] == hidden_z.shape[0] else vectors)
    result = {"last_hidden": torch.cat(tokens), "embedding": torch.cat(embeddings)}
    if heads is not None:
        result.update(sparse_weights=torch.cat(sparse), sparse_token_ids=torch.cat(token_ids),
                      colbert=torch.cat(colbert))
    if pooled:
        result["pooler"] = torch.cat(pooled)
    return result


def per_text(embedding: torch.Tensor) -> torch.Tensor:
    """Embeddings of a `single_first` probe, one row per text (the batch-of-one row dropped)."""
    return embedding[1:]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float((a[k] - b[k]).abs().max()) if a[k].shape == b[k].shape else float("inf")
            for k in a if k in b}
