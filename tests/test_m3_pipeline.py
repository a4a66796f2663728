"""bge-m3 end to end: the three modes survive prune + export exactly, verify guards the head files,
training distils the heads, and the export is what serving engines expect. FlagEmbedding itself (which
needs transformers 4) loads the export in tests/test_compat.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from bgeprune_cli.config import BaseDims, load_recipe
from bgeprune_cli.m3_encoder import M3Encoder
from bgeprune_cli.models import m3
from bgeprune_cli.models.families import adapter_for
from bgeprune_cli.models.loading import load_model, load_tokenizer, read_config, recipe_base_dims, resolve_base
from bgeprune_cli.models.probe import probe_texts
from bgeprune_cli.pruning.hooks import MaskHooks, as_float_masks
from bgeprune_cli.pruning.masks import Layout
from bgeprune_cli.stages import export_hf, prune, train, verify
from bgeprune_cli.verification.static_checks import check_serving_config
from conftest import SHORT_TRAIN, make_run, train_until_crash
from test_parity import cases

ATOL = 1e-5
BASE = "builtin:tiny-bge-m3"
REPO = Path(__file__).resolve().parents[1]
TEXTS = probe_texts()[:10]
SHORT = SHORT_TRAIN


def _export(tmp_path: Path, masks: dict) -> Path:
    run = make_run(tmp_path / "run", BASE, masks)
    prune.run(run / "masks")
    layout = Layout.from_masks(masks, BaseDims.from_config(read_config(resolve_base(BASE))))
    export_hf.run(run / "pruned", tmp_path / "out", fmt="stock" if layout.stock else "padded")
    return tmp_path / "out"


@torch.no_grad()
def _masked_m3(masks: dict) -> dict:
    """Dense, lexical and ColBERT outputs of the *masked* base, computed independently of the stages."""
    directory = resolve_base(BASE)
    dims = BaseDims.from_config(read_config(directory))
    model, tokenizer, heads = load_model(directory), load_tokenizer(directory), m3.load_heads(directory)
    layout = Layout.from_masks(masks, dims)
    keep = torch.tensor(layout.hidden)
    z = torch.zeros(dims.hidden).index_fill(0, keep, 1.0)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with MaskHooks(model, adapter_for("xlm-roberta"), as_float_masks(masks), dims.head_dim):
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"]
    return {"dense": F.normalize(states[:, 0, keep], dim=-1),
            "lexical": m3.lexical_weights(heads.token_weights(states), batch["input_ids"], mask,
                                          m3.special_token_ids(tokenizer)),
            "colbert": [v[:, keep] for v in m3.colbert_per_text(heads.colbert_vectors(states, mask, z), mask)]}


@pytest.mark.parametrize("case", ["all-ones", "whole-layer", "one-head-in-a-layer", "heads+hidden", "one-ffn-unit",
                                  "combined"])
def test_three_modes_of_the_export_equal_the_masked_model(tmp_path, builtin_cache, case):
    dims = BaseDims.from_config(read_config(resolve_base(BASE)))
    masks = cases(dims)[case]
    out = _export(tmp_path, masks)
    expected = _masked_m3(masks)
    got = M3Encoder.from_pretrained(out).encode(TEXTS, max_length=64, batch_size=4)
    assert (got.dense - expected["dense"]).abs().max() <= ATOL
    for mine, theirs in zip(got.lexical, expected["lexical"]):
        assert mine.keys() == theirs.keys() and all(abs(mine[t] - theirs[t]) <= ATOL for t in mine)
    for mine, theirs in zip(got.colbert, expected["colbert"]):
        assert mine.shape == theirs.shape and (mine - theirs).abs().max() <= ATOL
    heads = m3.load_heads(out)  # ColBERT is hidden' x hidden', as FlagEmbedding and vLLM build it
    hidden = read_config(out)["hidden_size"]
    assert tuple(heads.colbert_linear.weight.shape) == (hidden, hidden) and heads.file_dtype == torch.float16


@pytest.fixture(scope="module")
def m3_export(tmp_path_factory, builtin_cache) -> Path:
    dims = BaseDims.from_config(read_config(resolve_base(BASE)))
    return _export(tmp_path_factory.mktemp("m3"), cases(dims)["heads+hidden"])


def _checks(result: dict) -> dict:
    return {c["name"]: c for c in result["checks"]}


def test_verify_checks_heads_parity_and_per_mode_agreement(m3_export):
    result = verify.run(m3_export, compare=BASE)
    checks = _checks(result)
    assert result["ok"], checks
    assert checks["m3-heads"]["status"] == "pass" and checks["serving-config"]["status"] == "pass"
    diffs = checks["parity"]["details"]["max_abs_diff"]
    assert {"sparse_weights", "colbert"} <= diffs.keys() and max(diffs.values()) <= ATOL
    modes = checks["compare"]["details"]
    for mode in ("dense", "sparse", "colbert"):
        assert -1 <= modes[mode]["spearman_pairwise"] <= 1 and 0 <= modes[mode]["top10_overlap"] <= 1
    assert "dense_cosine_mean" not in modes["dense"]  # 32 vs 64 dims


def test_missing_sparse_head_fails_verify_and_says_flagembedding_would_go_random(tmp_path, m3_export):
    out = tmp_path / "out"
    shutil.copytree(m3_export, out)
    (out / m3.SPARSE_FILE).unlink()
    result = verify.run(out)
    check = _checks(result)["m3-heads"]
    assert not result["ok"] and check["status"] == "fail"
    assert "sparse_linear.pt" in check["message"] and "silently create random" in check["message"]


def test_wrong_shaped_or_pickled_head_fails_verify(tmp_path, m3_export):
    out = tmp_path / "out"
    shutil.copytree(m3_export, out)
    torch.save({"weight": torch.zeros(64, 64), "bias": torch.zeros(64)}, out / m3.COLBERT_FILE)  # unpruned
    assert "hidden size is 32" in _checks(verify.run(out))["m3-heads"]["message"]
    torch.save(torch.nn.Linear(32, 32), out / m3.COLBERT_FILE)
    check = _checks(verify.run(out))["m3-heads"]
    assert check["status"] == "fail" and "refused without running anything" in check["message"]


def test_sentence_transformer_dense_equals_our_dense(m3_export):
    st = SentenceTransformer(str(m3_export), device="cpu")
    st.max_seq_length = 64
    ours = M3Encoder.from_pretrained(m3_export).encode(TEXTS, max_length=64).dense
    assert (st.encode(TEXTS, convert_to_tensor=True).cpu() - ours).abs().max() <= ATOL


def test_config_has_every_field_serving_engines_read(tmp_path, m3_export):
    assert check_serving_config(m3_export).status == "pass"
    out = tmp_path / "out"
    shutil.copytree(m3_export, out)
    config = json.loads((out / "config.json").read_text())
    del config["max_position_embeddings"], config["pad_token_id"]
    config["auto_map"] = {"AutoModel": "modeling.Custom"}
    (out / "config.json").write_text(json.dumps(config))
    (out / "tokenizer.json").unlink()
    message = check_serving_config(out).message
    for problem in ("max_position_embeddings", "pad_token_id", "auto_map", "tokenizer.json"):
        assert problem in message


def test_model_card_explains_the_three_modes(m3_export):
    card = (m3_export / "README.md").read_text()
    assert "BGEM3FlagModel" in card and "M3Encoder" in card
    assert json.loads((m3_export / "lineage.json").read_text())["m3_heads"] is True


# ---------------------------------------------------------------- training


def _recipe(*sets: str, path: Path = REPO / "recipes" / "smoke-m3.toml"):
    return load_recipe(path, list(sets), base_dims=recipe_base_dims)


def test_training_distils_both_heads_and_resume_restores_them(tmp_path, builtin_cache, monkeypatch):
    from bgeprune_cli.training import checkpoints

    straight = train.run(_recipe(*SHORT), run_dir=tmp_path / "straight")
    assert straight["m3_heads"] is True
    records = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert {"sparse", "colbert"} <= records[0]["terms"].keys()
    trained = load_file(str(tmp_path / "straight" / "train" / m3.HEADS_FILE))
    base = m3.load_heads(resolve_base(BASE)).tensors()
    assert trained.keys() == base.keys() and trained["colbert_linear.weight"].dtype == torch.float16
    assert any(not torch.equal(trained[k], base[k]) for k in base)  # the heads learned

    train_until_crash(monkeypatch, _recipe(*SHORT), tmp_path / "crashed")
    assert any(k.startswith("m3.") for k in checkpoints.latest(tmp_path / "crashed").tensors("extras"))
    train.run(_recipe(*SHORT), run_dir=tmp_path / "crashed", resume=True)
    resumed = load_file(str(tmp_path / "crashed" / "train" / m3.HEADS_FILE))
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)


def test_50pct_recipe_trains_all_three_heads_on_a_bge_m3_base(tmp_path, builtin_cache):
    """recipes/50pct.toml as written, on a bge-m3-style base small enough for a test."""
    loaded = _recipe("base.model=builtin:tiny-bge-m3", "target.layers=2", "target.heads=2", "target.hidden=32",
                     "target.ffn=64", "data.stream=[]", 'data.train=["builtin:probe"]', "train.batch_size=4", *SHORT,
                     path=REPO / "recipes" / "50pct.toml")
    assert loaded.recipe.distill.sparse > 0 and loaded.recipe.distill.colbert > 0
    train.run(loaded, run_dir=tmp_path / "run")
    terms = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["terms"]
    assert {"similarity_kl", "sparse", "colbert"} <= terms.keys()  # (no cosine: hidden is pruned)


def test_texts_longer_than_the_model_takes_are_truncated_to_its_positions(m3_export):
    encoder = M3Encoder.from_pretrained(m3_export)
    limit = read_config(m3_export)["max_position_embeddings"] - 2  # XLM-R positions start after padding
    long_text = " ".join(["pruning"] * 2000)
    out = encoder.encode([long_text, "short"], max_length=512)
    assert encoder.max_tokens == limit and out.colbert[0].shape[0] == limit - 1  # tokens after CLS
    from bgeprune_cli.bench.models import load_bench_model

    bench = load_bench_model(str(m3_export)).encode([long_text], max_length=512, batch_size=1, with_heads=True)
    assert torch.allclose(bench.dense, out.dense[:1], atol=1e-5)
