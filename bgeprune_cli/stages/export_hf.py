"""`bgeprune export-hf`: a drop-in Hugging Face model directory (DESIGN.md §5).

Writes a stock `XLMRobertaModel`/`BertModel` directory: config.json with the real sizes (every
other field copied from the base, no auto_map), model.safetensors including the pooler, the base's
tokenizer files byte-for-byte, sentence-transformers files with the base's pooling and the real
dimension, a model card and `lineage.json` (the artifacts it came from and the kept indices).
For bge-m3 bases also `colbert_linear.pt` and `sparse_linear.pt` (plain state dicts in the dtype of
the base's head files), without which FlagEmbedding would silently make random heads.

`--format stock` (default) needs masks every stock config can describe: the same heads and FFN in
every kept layer, and hidden = head_size * heads. `--format padded` zero-pads other results to a
stock shape: exact, but padded units still cost compute.

Example:
    bgeprune export-hf runs/smoke out/smoke
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from .. import m3
from ..artifacts import Artifact, ensure_writable, read_artifact, write_artifact, write_json
from ..base import TOKENIZER_FILES
from ..errors import UsageError
from ..masks import Layout, full_layout
from ..pruning import pad_to_stock, stock_config
from ..sources import RunContext, source_weights_file
from ..tiny import write_sentence_transformers_files
from ..ui import step

LINEAGE = "lineage.json"


def _sentence_transformers_files(base_dir: Path, out: Path, dim: int, pooling) -> None:
    """Copy the base's sentence-transformers setup with the new dimension; bge-m3 style if it has none."""
    modules_path = base_dir / "modules.json"
    if not modules_path.is_file():
        write_sentence_transformers_files(out, dim, pooling.mode, pooling.max_seq_length, pooling.normalize)
        return
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out / name)
    for module in json.loads(modules_path.read_text()):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind not in ("Pooling", "Normalize"):
            raise UsageError(f"{base_dir}: sentence-transformers module {kind} is not supported by export-hf "
                             f"(its weights depend on the hidden size).")
        (out / module["path"]).mkdir(parents=True, exist_ok=True)
        if kind == "Pooling":
            pooling_config = json.loads((base_dir / module["path"] / "config.json").read_text())
            pooling_config["word_embedding_dimension"] = dim
            write_json(out / module["path"] / "config.json", pooling_config)


def _lineage(pruned: Artifact, layout: Layout, fmt: str, source: Path | None, has_heads: bool) -> dict:
    chain, artifact = [], pruned
    while artifact is not None:
        chain.append({"path": str(artifact.path.resolve()), "kind": artifact.kind,
                      "manifest_sha256": artifact.manifest_sha256})
        parents = artifact.manifest.get("inputs", [])
        artifact = read_artifact(parents[0]["path"], parents[0]["kind"]) if parents else None
    return {"artifacts": chain, "format": fmt, "layout": layout.to_json(), "m3_heads": has_heads,
            "source_weights": str(source.resolve()) if source else None}


_M3_USAGE = """
## bge-m3's three modes

`colbert_linear.pt` and `sparse_linear.pt` are the pruned model's sparse and ColBERT heads
(sliced to its hidden size and distilled with it), so dense, sparse and multi-vector retrieval work:

```python
from FlagEmbedding import BGEM3FlagModel   # FlagEmbedding 1.4 runs on transformers 4.x
model = BGEM3FlagModel("{path}", use_fp16=True)
out = model.encode(["query"], return_dense=True, return_sparse=True, return_colbert_vecs=True)

from bgeprune_cli.m3_encoder import M3Encoder   # the same three outputs with bgeprune, transformers 5
enc = M3Encoder.from_pretrained("{path}")
scores = enc.compute_score(enc.encode(["query"]), enc.encode(["passage"]))
```
"""


def _model_card(name: str, recipe, layout: Layout, sizes: dict, fmt: str, method: str, has_heads: bool) -> str:
    base = full_layout(layout.base_dims)
    ratio = layout.encoder_params() / base.encoder_params()
    return f"""---
library_name: sentence-transformers
base_model: {recipe.base.model}
tags: [bgeprune, pruned, sentence-transformers, feature-extraction]
---
# {name}

Structurally pruned from `{recipe.base.model}` with [bgeprune](https://pypi.org/project/bgeprune/).

| | base | this model |
|---|---|---|
| layers | {layout.base['layers']} | {sizes['layers']} |
| attention heads | {layout.base['heads']} | {sizes['heads']} |
| FFN size | {layout.base['ffn']} | {sizes['ffn']} |
| hidden size | {layout.base['hidden']} | {sizes['hidden']} |
| encoder parameters | {base.encoder_params():,} | {layout.encoder_params():,} ({ratio:.1%}) |

Target: `{recipe.target.model_dump(exclude_none=True)}`. Export format: `{fmt}`{' (zero-padded to a stock shape)' if fmt == 'padded' else ''}.
Masks came from: `{method}`. Kept layer indices: {layout.layers}.

Measured retention: run `bgeprune verify <this dir> --compare {recipe.base.model}` and
`bgeprune bench`; `lineage.json` records the bgeprune artifacts this export came from.

Loads as a stock model: `AutoModel.from_pretrained(dir)`, `SentenceTransformer(dir)`.
""" + (_M3_USAGE.replace("{path}", name) if has_heads else "")


def run(source: Path, out: Path, fmt: str | None = None, force: bool = False, name: str | None = None) -> dict:
    pruned = read_artifact(source, "pruned-model", needed_by="export-hf")
    ensure_writable(out, force)
    ctx = RunContext.of(pruned)
    fmt = fmt or ctx.recipe.export.format
    layout = Layout.from_json(pruned.read_json("layout.json"))
    if fmt == "stock" and not layout.stock:
        per_layer = ", ".join(f"layer {i}: {len(h)} heads/{len(f)} FFN" for i, h, f in
                              zip(layout.layers, layout.heads, layout.ffn))
        raise UsageError(
            f"{pruned.path} is not a stock shape ({per_layer}; hidden {len(layout.hidden)}, head size "
            f"{layout.head_dim}), so no stock config describes it. Use --format padded (exact, zero-padded to "
            f"a stock shape), or finalize with a targeted recipe.")
    state = load_file(str(pruned.file("model.safetensors")))
    sizes = layout.sizes()
    if fmt == "padded":
        try:
            state, sizes = pad_to_stock(state, ctx.adapter, layout)
        except ValueError as exc:
            raise UsageError(f"cannot export {pruned.path} as --format padded: {exc}.") from None
    config = stock_config(ctx.base_config, ctx.adapter, sizes)
    train = pruned.input("masks").input("train-run")
    method = train.info.get("method", "train")
    heads = (m3.M3Heads.from_tensors(load_file(str(pruned.file(m3.HEADS_FILE))))
             if pruned.has_file(m3.HEADS_FILE) else None)
    if heads is None and ctx.base_heads is not None:
        raise UsageError(f"{pruned.path} has no {m3.HEADS_FILE} but its base has bge-m3 heads: it was pruned by "
                         f"an older bgeprune. Run 'bgeprune prune' again, so the export gets sliced heads.")
    info = {"format": fmt, "sizes": sizes, "base_sizes": layout.base, "encoder_params": layout.encoder_params(),
            "m3_heads": heads is not None}
    with step(f"writing {out}"), write_artifact(out, "hf-model", force=force, recipe=pruned.recipe,
                                                 recipe_sha256=pruned.manifest["recipe_sha256"], inputs=[pruned],
                                                 info=info) as tmp:
        write_json(tmp / "config.json", config)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        for file in TOKENIZER_FILES:
            if (ctx.base_dir / file).is_file():
                shutil.copyfile(ctx.base_dir / file, tmp / file)
        _sentence_transformers_files(ctx.base_dir, tmp, sizes["hidden"], ctx.pooling)
        if heads is not None:
            m3.save_heads(heads, tmp)
        write_json(tmp / LINEAGE, _lineage(pruned, layout, fmt, source_weights_file(train, ctx), heads is not None))
        title = name or ctx.recipe.export.name or f"{Path(ctx.recipe.base.model).name}-bgeprune"
        (tmp / "README.md").write_text(_model_card(title, ctx.recipe, layout, sizes, fmt, method, heads is not None),
                                       encoding="utf-8")
    return {"artifact": str(out), "kind": "hf-model", **info}
