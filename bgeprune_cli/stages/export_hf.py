"""`bgeprune export-hf`: a drop-in Hugging Face model directory (docs/design.md, Stages and artifacts).

Writes a stock `XLMRobertaModel`/`BertModel` directory: config.json with the real sizes (every
other field copied from the base, no auto_map), model.safetensors including the pooler, the base's
tokenizer files byte-for-byte, sentence-transformers files with the base's pooling and the real
dimension, a model card and `lineage.json` (the artifacts it came from and the kept indices). No file names an
absolute local path (published.py): the artifacts it came from are relative to OUT (or named) with their
manifest hashes, a local base is its directory's name; `--local-paths` records them absolute.
With a trimmed vocabulary the tokenizer files are the one thing rewritten rather than copied, all of
them from the masks artifact's kept-id list (models/tokenizers/trim.py), config.json gets the new
vocab_size, and `vocab_map.json` (new id -> the base's id) is written and named in lineage.json.
For bge-m3 bases also `colbert_linear.pt` and `sparse_linear.pt` (plain state dicts in the dtype of
the base's head files), without which FlagEmbedding would silently make random heads.

With `--onnx` the export also holds `onnx/`: fp32 and int8 ONNX graphs traced from the files just
written (models/onnx/export.py), listed in the manifest like every other file.

`--format stock` (default) needs masks every stock config can describe: the same heads and FFN in
every kept layer, and hidden = head_size * heads. `--format padded` zero-pads other results to a
stock shape: exact, but padded units still cost compute.

Example:
    bgeprune export-hf runs/smoke out/smoke
"""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..artifacts import Artifact, ensure_writable, read_artifact, write_artifact, write_json
from ..errors import UsageError
from ..filenames import CONFIG, LINEAGE, MODEL_CARD, ONNX_DIR, TOKENIZER_FILES, VOCAB_MAP, WEIGHTS
from ..locks import claim_output
from ..models import m3
from ..models.card import CardFacts, count_base_params, model_card
from ..models.onnx.export import export_onnx, require_onnx
from ..models.precision import EXPORT_DTYPES, round_weights
from ..models.recipe_base import RecipeBase
from ..models.st_files import write_export_files
from ..models.tokenizers.files import base_tokenizer_files
from ..models.tokenizers.trim import write_trimmed
from ..models.tokenizers.vocab_map import VocabMap
from ..pruning.masks import Layout, full_layout
from ..pruning.slicing import pad_to_stock, stock_config
from ..pruning.sources import read_layout, source_weights_file
from ..published import PublicPaths, resolve_recorded
from ..ui import step


def _source_weights(source: Path | None, train: Artifact, ctx: RecipeBase, paths: PublicPaths) -> str | dict | None:
    """The file the tensors were sliced from: the run's student weights (where, and the sha256 the train-run
    recorded) or the base's own file (which base; nothing local)."""
    if source is None or paths.local:
        return str(source.resolve()) if source else None
    if source.parent == train.path:
        entry = next(e for e in train.manifest["files"] if e["path"] == source.name)
        return {**paths.artifact(source), "sha256": entry["sha256"]}
    base = ctx.recipe.base
    return {"base": paths.base(base.model), **({"revision": base.revision} if base.revision else {}),
            "file": source.name}


def _lineage(pruned: Artifact, layout: Layout, fmt: str, source: str | dict | None, has_heads: bool,
             paths: PublicPaths) -> dict:
    chain, artifact = [], pruned
    while artifact is not None:
        chain.append({**paths.artifact(artifact.path), "kind": artifact.kind,
                      "manifest_sha256": artifact.manifest_sha256})
        parents = artifact.manifest.get("inputs", [])
        artifact = (read_artifact(resolve_recorded(parents[0]["path"], artifact.path), parents[0]["kind"])
                    if parents else None)
    lineage = {"artifacts": chain, "format": fmt, "layout": layout.to_json(with_vocab=False), "m3_heads": has_heads,
               "source_weights": source}
    if layout.vocab is not None:  # the kept ids are vocab_map.json's new_to_old; not repeated here
        lineage["vocab_map"] = VOCAB_MAP
    return lineage


def _count(tensors: dict) -> int:
    return sum(t.numel() for t in tensors.values())


def run(source: Path, out: Path, *, fmt: str | None = None, force: bool = False, name: str | None = None,
        onnx: bool = False, local_paths: bool = False, dtype: str | None = None) -> dict:
    """Export `source` (RUN/pruned or its run) into `out`; `local_paths` records absolute local paths;
    `dtype` rounds the weights (default: the dtype the base stores them in)."""
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}, not {dtype!r}")
    if onnx and dtype not in (None, "float32"):
        raise UsageError("--onnx traces float32 graphs: export float32 for onnx/ (it has its own int8 graph), "
                         "or export this dtype without --onnx")
    if onnx:
        require_onnx()  # exit 4 with the install command before any work
    pruned = read_artifact(source, "pruned-model", needed_by="export-hf")
    with claim_output(out):
        return _export(pruned, Path(out), fmt, force, name, onnx, local_paths, dtype)


def _export(pruned: Artifact, out: Path, fmt: str | None, force: bool, name: str | None, onnx: bool,
            local_paths: bool, dtype: str | None) -> dict:
    ensure_writable(out, force, "hf-model", [pruned])
    ctx = RecipeBase.of(pruned)
    fmt = fmt or ctx.recipe.export.format
    masks = pruned.input("masks")
    layout = read_layout(masks)
    if fmt == "stock" and not layout.stock:
        per_layer = ", ".join(f"layer {i}: {len(h)} heads/{len(f)} FFN" for i, h, f in
                              zip(layout.layers, layout.heads, layout.ffn))
        raise UsageError(
            f"{pruned.path} is not a stock shape ({per_layer}; hidden {len(layout.hidden)}, head size "
            f"{layout.head_dim}), so no stock config describes it. Use --format padded (exact, zero-padded to "
            f"a stock shape), or finalize with a targeted recipe.")
    state = load_file(str(pruned.file(WEIGHTS)))
    sizes = layout.sizes()
    if fmt == "padded":
        try:
            state, sizes = pad_to_stock(state, ctx.adapter, layout)
        except ValueError as exc:
            raise UsageError(f"cannot export {pruned.path} as --format padded: {exc}.") from None
    config = stock_config(ctx.base_config, ctx.adapter, sizes, layout.vocab)
    stored = str(next(v for v in state.values() if v.is_floating_point()).dtype).removeprefix("torch.")
    rounded = dtype is not None and dtype != stored
    if rounded:  # the bge-m3 head files stay as the base ships them (upstream: float32)
        state = round_weights(state, dtype)
        config["torch_dtype"] = dtype
        if "dtype" in config:
            config["dtype"] = dtype
    train = masks.input("train-run")
    method = train.info.get("method", "train")
    heads = (m3.M3Heads.from_tensors(load_file(str(pruned.file(m3.HEADS_FILE))))
             if pruned.has_file(m3.HEADS_FILE) else None)
    if heads is None and ctx.base_heads is not None:
        raise UsageError(f"{pruned.path} has no {m3.HEADS_FILE} but its base has bge-m3 heads: the export would "
                         f"lack the sliced sparse and ColBERT heads. Run 'bgeprune prune' again, so it writes them.")
    paths = PublicPaths(out, local=local_paths)
    vocab = paths.vocab(masks.info.get("vocab")) if layout.vocab is not None else None
    info = {"format": fmt, "sizes": sizes, "base_sizes": layout.base, "encoder_params": layout.encoder_params(),
            "m3_heads": heads is not None, "card_path": paths.shown(out), **({"vocab": vocab} if vocab else {}),
            **({"matryoshka_dims": widths} if (widths := ctx.recipe.distill.matryoshka_dims) else {}),
            **({"dtype": dtype, "rounded_from": stored} if rounded else {}),
            **({"local_paths": True} if local_paths else {})}  # export-onnx records its argv the same way
    with step(f"writing {out}"), write_artifact(out, "hf-model", force=force, recipe=pruned.recipe,
                                                 recipe_sha256=pruned.manifest["recipe_sha256"], inputs=[pruned],
                                                 info=info, paths=paths) as tmp:
        write_json(tmp / CONFIG, config)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})
        rewritten = []
        if layout.vocab is not None:
            rewritten = write_trimmed(base_tokenizer_files(ctx.base_dir, ctx.base_config), layout.vocab, tmp)
            VocabMap(layout.vocab, ctx.base_config.get("vocab_size", layout.vocab[-1] + 1)).write(tmp)
        for file in TOKENIZER_FILES:
            if (ctx.base_dir / file).is_file() and file not in rewritten:
                shutil.copyfile(ctx.base_dir / file, tmp / file)
        write_export_files(ctx.base_dir, tmp, sizes["hidden"], ctx.pooling)
        if heads is not None:
            m3.save_heads(heads, tmp)
        source = _source_weights(source_weights_file(train, ctx), train, ctx, paths)
        write_json(tmp / LINEAGE, _lineage(pruned, layout, fmt, source, heads is not None, paths))
        title = (name or ctx.recipe.export.name
                 or f"{Path(ctx.recipe.base.model.removeprefix('builtin:')).name}-bgeprune")
        train_info = {**train.info, "method": method,
                      "data_summary": paths.data_summary(train.info.get("data_summary"))}
        facts = CardFacts(
            title=title, path=paths.shown(out), base_model=ctx.recipe.base.model,
            base_shown=paths.base(ctx.recipe.base.model), base_dir=ctx.base_dir,
            base_config=ctx.base_config, target=ctx.recipe.target.model_dump(exclude_none=True),
            base_sizes=layout.base, sizes=sizes, kept_layers=layout.layers, encoder_params=layout.encoder_params(),
            base_encoder_params=full_layout(layout.base_dims).encoder_params(), fmt=fmt,
            params=_count(state) + (_count(heads.tensors()) if heads is not None else 0),
            base_params=count_base_params(ctx.base_config)
            + (_count(ctx.base_heads.tensors()) if ctx.base_heads else 0), pooling=ctx.pooling,
            max_seq_length=ctx.pooling.max_seq_length, train_info=train_info,
            parity=max(pruned.info.get("parity_max_abs_diff", {}).values(), default=None), has_heads=heads is not None,
            vocab=vocab, matryoshka_dims=widths)
        if onnx:  # traced from the directory as written, like export-onnx does from a finished export
            (tmp / ONNX_DIR).mkdir()
            info["onnx"] = export_onnx(tmp, tmp / ONNX_DIR)
            facts.onnx_files = sorted(p.name for p in (tmp / ONNX_DIR).iterdir())
        (tmp / MODEL_CARD).write_text(model_card(facts), encoding="utf-8")
    return {"artifact": str(out), "kind": "hf-model", **info}
