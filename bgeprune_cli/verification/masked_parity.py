"""verify's `provenance` and `parity` checks: the export against the masked model it was pruned from.

Provenance: every exported tensor (bge-m3's head files too) equals the slice of the unpruned model it
claims to be. Parity: the export's outputs, from the fresh process, equal the masked model's
(`pruning/sources.masked_outputs`, what `prune` compares with too) on every mode.

Example:
    bgeprune verify out/smoke      # the provenance and parity rows
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ArtifactError
from ..models import m3
from ..models.loading import load_tokenizer
from ..models.precision import Tolerance, min_cosines
from ..models.probe import max_abs_diff, per_text, probe_batches, probe_texts
from ..models.recipe_base import RecipeBase
from ..models.tokenizers.vocab_map import VocabMap
from ..pruning.masks import Layout
from ..pruning.slicing import pad_to_stock, slice_state_dict
from ..pruning.sources import masked_outputs
from . import PROBE_MAX_LENGTH
from .static_checks import Check


def check_provenance(exported: dict, model, heads, out: Path, ctx: RecipeBase, layout: Layout, padded: bool) -> Check:
    expected = slice_state_dict(model.state_dict(), ctx.adapter, layout)
    if padded:
        expected, _ = pad_to_stock(expected, ctx.adapter, layout)
    if heads is not None and m3.has_heads(out):  # the head files are slices of the run's heads too
        try:
            exported_heads = m3.load_heads(out).tensors()
        except ArtifactError:
            exported_heads = {}  # the m3-heads check reports why
        exported = {**exported, **{f"{m3.HEADS_FILE}:{k}": v for k, v in exported_heads.items()}}
        expected.update({f"{m3.HEADS_FILE}:{k}": v for k, v in
                         heads.sliced(layout.hidden, ctx.dims.hidden).tensors().items() if exported_heads})
    foreign = sorted(set(exported) - set(expected))
    differ = sorted(k for k in set(exported) & set(expected)
                    if not torch.equal(exported[k], expected[k].to(exported[k].dtype)))
    if foreign or differ:
        worst = {k: float((exported[k].float() - expected[k].float()).abs().max()) for k in differ[:3]
                 if exported[k].shape == expected[k].shape}
        return Check("provenance", "fail", f"{len(differ)} tensor(s) are not the slice of the unpruned model "
                     f"they claim to be (re-initialised, identity or edited?): {', '.join(differ[:3])} "
                     f"max diff {worst}; {len(foreign)} tensor(s) have no source: {', '.join(foreign[:3])}",
                     {"differ": differ, "foreign": foreign})
    return Check("provenance", "pass", f"all {len(exported)} tensors are exact slices of the unpruned model")


def check_parity(exported_outputs: dict, model, heads, ctx: RecipeBase, masks: dict, layout: Layout,
                 tolerance: Tolerance, texts: list[str], vmap: VocabMap | None, rounded: str | None = None) -> Check:
    """`rounded`: the dtype export-hf rounded the weights to, proved at `tolerance` (models/precision.py)."""
    atol = tolerance.atol
    if not exported_outputs:
        return Check("parity", "fail", "no outputs from the exported model (it did not load)")
    if vmap is not None and not texts:
        return Check("parity", "skip", "no text to compare on: the tokenizer check found none that the trimmed "
                     "vocabulary covers (see its message)")
    if vmap is not None and "sparse_token_ids" in exported_outputs:  # lexical weights are keyed by token id
        exported_outputs = {**exported_outputs,
                            "sparse_token_ids": vmap.ids_to_base(exported_outputs["sparse_token_ids"])}
    batches = probe_batches(load_tokenizer(ctx.base_dir), texts or probe_texts(), PROBE_MAX_LENGTH)
    masked = masked_outputs(model, ctx, masks, layout, batches, heads)
    masked["st_embedding"] = per_text(masked["embedding"])
    diffs = max_abs_diff(masked, exported_outputs)
    absent = sorted(set(masked) - set(diffs))
    if absent:  # e.g. the export's head files are missing or unreadable: no sparse/ColBERT outputs
        return Check("parity", "fail", f"the export produced no {', '.join(absent)} output to compare (see the "
                     f"m3-heads check)", {"max_abs_diff": diffs, "absent": absent})
    worst = max(diffs.values())
    cosines = min_cosines(masked, exported_outputs)
    lowest = min(cosines.values(), default=1.0)
    near = worst <= atol and (tolerance.min_cosine is None or lowest >= tolerance.min_cosine)
    status = "pass" if near else "fail"
    where = f" on the {len(texts)} texts the trimmed vocabulary covers" if vmap is not None else ""
    rounding = "" if rounded is None else (
        f"; weights rounded to {rounded}: lowest cosine {lowest:.6f} ({'>=' if lowest >= tolerance.min_cosine else '<'}"
        f" {tolerance.min_cosine:g})")
    return Check("parity", status, f"max |export - masked| = {worst:.2e} ({'<=' if worst <= atol else '>'} "
                 f"atol {atol:g}){rounding}{where} over " + (
                     "AutoModel states, pooler, SentenceTransformer embeddings, sparse weights (token ids mapped back "
                     "through vocab_map.json) and ColBERT vectors" if "colbert" in diffs and vmap is not None else
                     "AutoModel states, pooler, SentenceTransformer embeddings, sparse weights and ColBERT vectors"
                     if "colbert" in diffs else "AutoModel states, pooler and SentenceTransformer embeddings"),
                 {"max_abs_diff": diffs, "min_cosine": cosines, "atol": atol,
                  **({"dtype": rounded, "min_cosine_required": tolerance.min_cosine} if rounded else {})})
