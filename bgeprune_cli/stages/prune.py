"""`bgeprune prune`: physically remove what the masks drop; HF tensor names, layers renumbered.

Slices every tensor the masks touch (docs/design.md, Masks): q/k/v rows and output-projection
columns per head, FFN rows/columns, whole layers, and with hidden pruning every hidden-sized axis
(embeddings, LayerNorms, projections, pooler, and the input dims of bge-m3's sparse and ColBERT
heads, whose hidden-sized ColBERT output keeps the same dims), and with a trimmed vocabulary the rows of
`embeddings.word_embeddings` of the kept token ids. Before writing, the pruned model is checked against
the masked model on the probe batch; a difference above `atol` fails the stage (exit 1). With a trimmed
vocabulary that check is on ids: a token the vocabulary dropped reads <unk> on both sides (the
tokenizer's side is verify's `tokenizer` check).

Example:
    bgeprune prune runs/smoke/masks                   # -> runs/smoke/pruned
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..artifacts import ensure_writable, read_artifact, write_artifact, write_json
from ..errors import CheckFailed
from ..filenames import CONFIG, WEIGHTS
from ..locks import claim_output
from ..models import m3
from ..models.loading import load_tokenizer, weights_dtype
from ..models.probe import max_abs_diff, model_outputs, probe_batches, probe_texts
from ..models.recipe_base import RecipeBase
from ..pruning.masks import full_layout
from ..pruning.slicing import build_model, slice_state_dict, stock_config
from ..pruning.sources import masked_outputs, read_layout, read_masks, source_heads, source_model
from ..pruning.vocab import parity_batches
from ..ui import step


def run(masks_dir: Path, *, out: Path | None = None, force: bool = False, atol: float = 1e-4) -> dict:
    masks_art = read_artifact(masks_dir, "masks", needed_by="prune")
    out = Path(out or masks_art.path.parent / "pruned")
    with claim_output(out):
        return _prune(masks_art, out, force, atol)


def _prune(masks_art, out: Path, force: bool, atol: float) -> dict:
    ensure_writable(out, force, "pruned-model", [masks_art])
    train = masks_art.input("train-run")
    ctx = RecipeBase.of(masks_art)
    masks = read_masks(masks_art)
    layout = read_layout(masks_art)
    with step("loading the unpruned model"):
        model = source_model(train, ctx)
        heads = source_heads(train, ctx)
    with step("slicing tensors"):
        state = slice_state_dict(model.state_dict(), ctx.adapter, layout)
        config = stock_config(ctx.base_config, ctx.adapter, layout.sizes(), layout.vocab)
        pruned = build_model(config, state, ctx.adapter, layout.head_dim)
        pruned_heads = heads.sliced(layout.hidden, ctx.dims.hidden) if heads is not None else None
    with step("checking pruned == masked on the probe batch"):
        tokenizer = load_tokenizer(ctx.base_dir)
        texts = probe_texts()[:12] + (probe_texts()[14:22] if layout.vocab is not None else [])  # + other scripts
        batches = pruned_batches = probe_batches(tokenizer, texts, max_length=64)
        if layout.vocab is not None:
            batches, pruned_batches = parity_batches(batches, layout.vocab, tokenizer.unk_token_id)
        masked = masked_outputs(model, ctx, masks, layout, batches, heads)
        outputs = model_outputs(pruned, pruned_batches, ctx.pooling, heads=pruned_heads)
        if layout.vocab is not None and "sparse_token_ids" in outputs:  # lexical weights: compare the base's ids
            outputs["sparse_token_ids"] = torch.tensor(layout.vocab)[outputs["sparse_token_ids"]]
        diffs = max_abs_diff(masked, outputs)
    if max(diffs.values()) > atol:
        raise CheckFailed(f"pruned model differs from the masked model by {max(diffs.values()):.3g} "
                          f"(> {atol}); nothing was written. Per output: {diffs}")
    del model, pruned
    dtype = weights_dtype(ctx.base_dir)
    base_params = full_layout(ctx.dims).encoder_params()
    info = {"layout_sizes": layout.sizes(), "stock_shape": layout.stock, "uniform": layout.uniform,
            "encoder_params": layout.encoder_params(), "base_encoder_params": base_params,
            "encoder_ratio": layout.encoder_params() / base_params, "parity_max_abs_diff": diffs,
            "dtype": str(dtype).removeprefix("torch."), "m3_heads": pruned_heads is not None,
            **({"vocab": masks_art.info.get("vocab")} if layout.vocab is not None else {})}
    with step(f"writing {out}"), write_artifact(out, "pruned-model", force=force, recipe=masks_art.recipe,
                                                 recipe_sha256=masks_art.manifest["recipe_sha256"],
                                                 inputs=[masks_art], info=info) as tmp:
        save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})
        write_json(tmp / CONFIG, config)
        if pruned_heads is not None:  # in the dtype of the base's head files, which the export keeps
            save_file(pruned_heads.tensors(), str(tmp / m3.HEADS_FILE))
    return {"artifact": str(out), "kind": "pruned-model", **info}

