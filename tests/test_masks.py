"""Gate math and the finalize rule: exact counts, reproducible ties, exact parameter counts."""

from __future__ import annotations

import math

import torch
from transformers import AutoConfig, AutoModel

from bgeprune_cli.config import BaseDims, TargetSection
from bgeprune_cli.pruning.masks import (
    BETA,
    LIMIT_L,
    LIMIT_R,
    Layout,
    finalize,
    full_layout,
    keep_prob,
    sample_gates,
    top_k,
)

DIMS = BaseDims(layers=4, heads=4, ffn=16, hidden=64)


def test_keep_probability_formula():
    log_alpha = torch.tensor([-3.0, 0.0, 3.0])
    expected = torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_L / LIMIT_R))
    assert torch.allclose(keep_prob(log_alpha), expected)
    assert keep_prob(torch.tensor(0.0)) > 0.5  # the stretch puts more mass above 0 than below


def test_samples_are_in_range_with_exact_zeros_and_ones():
    z = sample_gates(torch.zeros(20000), torch.Generator().manual_seed(0))
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0
    assert 0 < float((z == 0).float().mean()) < 0.5 and 0 < float((z == 1).float().mean()) < 0.5
    frac_nonzero = float((z > 0).float().mean())
    assert abs(frac_nonzero - float(keep_prob(torch.tensor(0.0)))) < 0.02


def test_top_k_breaks_ties_by_index():
    assert top_k(torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0]), 2).tolist() == [False, True, True, False, False]


def test_targeted_finalize_hits_the_target_exactly():
    torch.manual_seed(0)
    scores = {"layer": torch.randn(4), "heads": torch.randn(4, 4), "ffn": torch.randn(4, 16), "hidden": torch.randn(64)}
    target = TargetSection(layers=3, heads=2, ffn=5, hidden=32)
    masks = finalize(scores, target, DIMS)
    assert int(masks["layer"].sum()) == 3 and int(masks["hidden"].sum()) == 32
    for i in range(4):
        kept = bool(masks["layer"][i])
        assert int(masks["heads"][i].sum()) == (2 if kept else 0)
        assert int(masks["ffn"][i].sum()) == (5 if kept else 0)
    dropped = int(torch.nonzero(~masks["layer"])[0])
    assert dropped == int(scores["layer"].argmin())
    assert all(torch.equal(masks[k], v) for k, v in finalize(scores, target, DIMS).items())  # reproducible


def test_sparsity_finalize_rounds_expected_counts_and_keeps_one():
    scores = {"heads": torch.tensor([[5.0, 5.0, -5.0, -5.0], [-5.0] * 4, [5.0] * 4, [5.0, -5.0, -5.0, -5.0]])}
    masks = finalize(scores, TargetSection(mode="sparsity", sparsity=0.5), DIMS)
    assert masks["heads"].sum(1).tolist() == [2, 1, 4, 1]


def test_encoder_params_match_a_real_model_of_that_shape():
    layout = Layout([0, 2], [[0, 1], [1, 3]], [list(range(5)), list(range(5))], list(range(32)), 16, {})
    config = AutoConfig.for_model("bert", hidden_size=32, num_attention_heads=2, intermediate_size=5,
                                  num_hidden_layers=2, vocab_size=10)
    model = AutoModel.from_config(config)
    assert layout.encoder_params() == sum(p.numel() for p in model.encoder.parameters())
    full = full_layout(DIMS)
    model = AutoModel.from_config(AutoConfig.for_model("bert", hidden_size=64, num_attention_heads=4,
                                                       intermediate_size=16, num_hidden_layers=4, vocab_size=10))
    assert full.encoder_params() == sum(p.numel() for p in model.encoder.parameters())


def test_layout_shape_properties():
    masks = {"heads": torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool),
             "hidden": torch.arange(64) < 32}
    layout = Layout.from_masks(masks, DIMS)
    assert layout.uniform and layout.stock and layout.heads[1] == [0, 2]
    masks["heads"][0, 2] = True
    assert not Layout.from_masks(masks, DIMS).uniform
