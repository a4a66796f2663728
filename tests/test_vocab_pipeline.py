"""Vocabulary trimming end to end: recipe -> magnitude -> finalize-masks -> prune -> export-hf (-> verify).

XLM-R (Unigram, with sentencepiece.bpe.model) and BERT (WordPiece, with vocab.txt) bases, trimming alone
and with encoder pruning, and tiny bge-m3 heads. For the corpus's texts the export reproduces the masked
untrimmed model (dense, pooler, ColBERT, sparse weights with their token ids mapped back) to 1e-5, and
every tokenizer file gives the same ids, which map back to the base's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModel

from bgeprune_cli.artifacts import read_artifact
from bgeprune_cli.config import load_recipe
from bgeprune_cli.m3_encoder import M3Encoder
from bgeprune_cli.models import m3
from bgeprune_cli.models.loading import load_model, load_tokenizer, recipe_base_dims
from bgeprune_cli.models.probe import max_abs_diff, model_outputs, probe_batches, probe_texts
from bgeprune_cli.models.recipe_base import RecipeBase
from bgeprune_cli.models.st_files import read_pooling
from bgeprune_cli.models.tokenizers.sentencepiece_model import encode_ids
from bgeprune_cli.models.tokenizers.vocab_map import VocabMap
from bgeprune_cli.pruning.hooks import MaskHooks, as_float_masks
from bgeprune_cli.pruning.sources import read_layout, read_masks
from bgeprune_cli.stages import export_hf, finalize_masks, magnitude, prune, verify

ATOL = 1e-5
CORPUS = Path(__file__).resolve().parents[1] / "recipes" / "corpora" / "smoke-en-de-fr.txt"
TEXTS = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
TARGET = "[target]\nlayers = 2\nheads = 2\nhidden = 32\nffn = 64\n"
CASES = {  # name: (base, [target] section, also run verify)
    "xlmr": ("builtin:tiny-xlm-roberta", "", False),
    "xlmr-pruned": ("builtin:tiny-xlm-roberta", TARGET, False),
    "bert": ("builtin:tiny-bert", "", False),  # verify on a BERT export: test_vocab_tokenizers.py, directly
    "bert-pruned": ("builtin:tiny-bert", TARGET, False),
    "m3-pruned": ("builtin:tiny-bge-m3", TARGET, True),
}


def build(root: Path, name: str) -> Path:
    base, target, _ = CASES[name]
    recipe = root / f"{name}.toml"
    recipe.write_text(f'[base]\nmodel = "{base}"\n{target}[vocab]\ncorpus = ["{CORPUS}"]\n')
    run = root / name
    magnitude.run(load_recipe(recipe, base_dims=recipe_base_dims), run_dir=run)
    finalize_masks.run(run / "train")
    prune.run(run / "masks")
    export_hf.run(run / "pruned", run / "out")
    return run


def masked_context(run: Path):
    masks_art = read_artifact(run / "masks", "masks")
    ctx = RecipeBase.of(masks_art)
    return ctx, read_masks(masks_art), read_layout(masks_art)


def check_parity(run: Path) -> None:
    """The export on its own tokens == the masked untrimmed model on the base's, for the corpus's texts."""
    ctx, masks, layout = masked_context(run)
    model = load_model(ctx.base_dir)
    with MaskHooks(model, ctx.adapter, as_float_masks(masks), layout.head_dim):
        masked = model_outputs(model, probe_batches(load_tokenizer(ctx.base_dir), TEXTS, 64), ctx.pooling,
                               layout.hidden, ctx.base_heads)
    out = run / "out"
    exported = model_outputs(AutoModel.from_pretrained(out).eval(), probe_batches(load_tokenizer(out), TEXTS, 64),
                             read_pooling(out), heads=m3.load_heads(out))
    vmap = VocabMap.read(out)
    if ctx.base_heads is not None:
        assert not torch.equal(exported["sparse_token_ids"], masked["sparse_token_ids"])  # new ids differ...
        exported["sparse_token_ids"] = vmap.ids_to_base(exported["sparse_token_ids"])  # ...until mapped
    diffs = max_abs_diff(masked, exported)
    assert set(diffs) == set(masked) and max(diffs.values()) <= ATOL, diffs


def check_ids(run: Path) -> None:
    """Every tokenizer file agrees; corpus ids map back to the base's; specials stay where XLM-R fixes them."""
    ctx, _, layout = masked_context(run)
    out, vmap = run / "out", VocabMap.read(run / "out")
    assert vmap.new_to_old == layout.vocab and len(vmap.new_to_old) < vmap.base_size
    config = json.loads((out / "config.json").read_text())
    assert (config["vocab_size"] == len(vmap.new_to_old)
            == AutoModel.from_pretrained(out).get_input_embeddings().num_embeddings)
    texts = probe_texts() + TEXTS
    fast = [e.ids for e in
            Tokenizer.from_file(str(out / "tokenizer.json")).encode_batch(texts, add_special_tokens=False)]
    tokenizer = load_tokenizer(out)
    assert tokenizer(texts, add_special_tokens=False)["input_ids"] == fast
    if ctx.base_config["model_type"] == "xlm-roberta":
        assert encode_ids(out / "sentencepiece.bpe.model", texts) == fast
        assert [tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id,
                tokenizer.mask_token_id] == [0, 1, 2, 3, len(vmap.new_to_old) - 1]
    else:
        pieces = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
        assert pieces == sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    base = load_tokenizer(ctx.base_dir)
    for text in TEXTS:  # with special tokens: the post-processor's ids were renumbered too
        assert [vmap.new_to_old[i] for i in tokenizer(text)["input_ids"]] == base(text)["input_ids"], text


def check_m3_lexical(run: Path) -> None:
    """M3Encoder on the export, its lexical weights mapped to the base's ids == the masked model's."""
    ctx, masks, layout = masked_context(run)
    encoder = M3Encoder.from_pretrained(run / "out")
    ours = encoder.to_base_ids(encoder.encode(TEXTS, max_length=64))
    model, tokenizer = load_model(ctx.base_dir), load_tokenizer(ctx.base_dir)
    heads = ctx.base_heads.sliced(layout.hidden, ctx.dims.hidden)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with MaskHooks(model, ctx.adapter, as_float_masks(masks), layout.head_dim), torch.no_grad():
        theirs = m3.encode_batch(model, heads, batch, ctx.pooling, m3.special_token_ids(tokenizer),
                                 keep=torch.tensor(layout.hidden)).lexical
    assert sum(map(len, theirs)) > 10  # the comparison is not between empty dicts
    for mine, expected in zip(ours, theirs, strict=True):
        assert mine.keys() == expected.keys() and all(abs(mine[t] - expected[t]) <= ATOL for t in mine)


@pytest.mark.parametrize("name", CASES)
def test_trimmed_export_reproduces_the_untrimmed_model_on_corpus_text(tmp_path, name):
    run = build(tmp_path, name)
    check_parity(run)
    check_ids(run)
    if CASES[name][0] == "builtin:tiny-bge-m3":
        check_m3_lexical(run)
    if CASES[name][2]:
        result = verify.run(run / "out")
        checks = {c["name"]: c for c in result["checks"]}
        assert result["ok"], [c for c in result["checks"] if c["status"] == "fail"]
        assert checks["tokenizer"]["status"] == "pass" and checks["parity"]["status"] == "pass"
        assert checks["tokenizer"]["details"]["covered_sample"] == len(TEXTS)  # min_count 1: the whole corpus
        if name.startswith("m3"):
            assert "sparse_token_ids" in checks["parity"]["details"]["max_abs_diff"]


def test_trimmed_export_onnx_graphs_verify_on_the_covered_texts(tmp_path):
    """ONNX graphs of a trimmed export: verify runs them on the texts the fresh process encoded (the covered
    texts), so fp32 parity compares like with like, and the sparse output carries the trimmed ids."""
    pytest.importorskip("onnxruntime")
    from bgeprune_cli.stages import export_onnx

    run = build(tmp_path, "m3-pruned")
    export_onnx.run(run / "out")
    result = verify.run(run / "out")
    checks = {c["name"]: c for c in result["checks"]}
    assert result["ok"], [c for c in result["checks"] if c["status"] == "fail"]
    assert checks["onnx-parity"]["status"] == "pass" and checks["onnx-int8"]["status"] == "pass"
    assert checks["tokenizer"]["details"]["covered_sample"] == len(TEXTS)
