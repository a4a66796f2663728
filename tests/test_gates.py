"""Hard-concrete gate math, expected size against a hand count, and the Lagrangian's signs."""

from __future__ import annotations

import math

import pytest
import torch

from bgeprune_cli.config import BaseDims, TargetSection
from bgeprune_cli.pruning.masks import BETA, LIMIT_L, LIMIT_R, Layout, finalize, full_layout, keep_prob, sample_gates
from bgeprune_cli.training.gates import Lagrangian, MaskSet, expected_sizes

# hidden 4, 2 heads of 2, FFN 3, 2 layers: small enough to count by hand.
TINY = BaseDims(layers=2, heads=2, ffn=3, hidden=4)


def test_keep_probability_formula_and_monte_carlo():
    log_alpha = torch.tensor([-2.0, 0.0, 1.5])
    expected = torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_L / LIMIT_R))
    assert torch.allclose(keep_prob(log_alpha), expected)
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([sample_gates(log_alpha, generator) for _ in range(20000)])
    assert torch.allclose((samples > 0).float().mean(0), expected, atol=0.01)


def test_samples_lie_in_unit_interval_with_exact_zeros_and_ones():
    generator = torch.Generator().manual_seed(1)
    z = sample_gates(torch.zeros(50000), generator)
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()


def test_samples_are_differentiable_in_log_alpha():
    log_alpha = torch.zeros(100, requires_grad=True)
    sample_gates(log_alpha, torch.Generator().manual_seed(2)).sum().backward()
    assert log_alpha.grad is not None and log_alpha.grad.abs().sum() > 0


def test_expected_size_matches_a_hand_count():
    # Per layer: q, k, v 3*(4*4+4)=60, attention output 4*4+4=20, LayerNorm 8 -> 88;
    # FFN in 4*3+3=15, FFN out 3*4+4=16, LayerNorm 8 -> 39. Two layers: 2*127 = 254.
    assert float(expected_sizes({}, TINY)["encoder_params"]) == full_layout(TINY).encoder_params() == 254
    # Layer 1 gone; in layer 0 each head kept with probability 1/2 (one head expected):
    # q, k, v 3*(4*2+2)=30, output 2*4+4=12, LayerNorm 8 -> 50, plus the FFN 39 -> 89.
    probs = {"layer": torch.tensor([1.0, 0.0]), "heads": torch.full((2, 2), 0.5)}
    sizes = expected_sizes(probs, TINY)
    assert float(sizes["encoder_params"]) == pytest.approx(89)
    assert float(sizes["layers"]) == 1 and float(sizes["heads"]) == pytest.approx(1.0)


def test_expected_size_with_binary_probabilities_equals_the_pruned_layout():
    generator = torch.Generator().manual_seed(3)
    dims = BaseDims(layers=3, heads=4, ffn=8, hidden=16)
    for _ in range(5):
        masks = {"layer": torch.tensor([True, False, True]), "heads": torch.rand(3, 4, generator=generator) > 0.5,
                 "ffn": torch.rand(3, 8, generator=generator) > 0.3,
                 "hidden": torch.rand(16, generator=generator) > 0.4}
        masks["heads"][:, 0] = True
        masks["ffn"][:, 0] = True
        expected = expected_sizes({k: v.float() for k, v in masks.items()}, dims)["encoder_params"]
        assert float(expected) == pytest.approx(Layout.from_masks(masks, dims).encoder_params())


def _penalty_gradient(sparsity_now: float, target_sparsity: float) -> float:
    """d penalty / d log_alpha after one λ update, for heads kept with probability 1 - sparsity_now."""
    dims = BaseDims(layers=1, heads=4, ffn=8, hidden=16)
    target = TargetSection(mode="targeted", heads=round(4 * (1 - target_sparsity)))
    lagrangian = Lagrangian(target, dims, ["heads"], warmup=0)
    lambdas = torch.optim.AdamW(lagrangian.parameters(), lr=0.1, maximize=True, weight_decay=0.0)
    p = 1 - sparsity_now
    log_alpha = torch.full((1, 4), math.log(p / (1 - p)) + BETA * math.log(-LIMIT_L / LIMIT_R), requires_grad=True)
    penalty, gaps = lagrangian({"heads": keep_prob(log_alpha)}, step=0)
    assert gaps["heads"] == pytest.approx(sparsity_now - target_sparsity, abs=1e-5)
    penalty.backward()
    lambdas.step()
    log_alpha.grad = None
    penalty, _ = lagrangian({"heads": keep_prob(log_alpha)}, step=0)
    penalty.backward()
    return float(log_alpha.grad.sum())


def test_below_target_sparsity_pushes_towards_pruning():
    # Gradient descent moves log_alpha against the gradient: a positive gradient lowers keep probabilities.
    assert _penalty_gradient(sparsity_now=0.1, target_sparsity=0.5) > 0


def test_above_target_sparsity_pushes_towards_keeping():
    assert _penalty_gradient(sparsity_now=0.9, target_sparsity=0.5) < 0


def test_targets_ramp_linearly_over_warmup():
    lagrangian = Lagrangian(TargetSection(mode="targeted", layers=1), TINY, ["layer"], warmup=10)
    assert lagrangian.target_at(0)["layer"] == 0
    assert lagrangian.target_at(5)["layer"] == pytest.approx(0.25)
    assert lagrangian.target_at(10)["layer"] == lagrangian.target_at(99)["layer"] == pytest.approx(0.5)


def test_sparsity_mode_constrains_expected_parameters():
    lagrangian = Lagrangian(TargetSection(mode="sparsity", sparsity=0.4), TINY, ["heads", "ffn"], warmup=0)
    probs = {"heads": torch.ones(2, 2), "ffn": torch.ones(2, 3)}
    sparsity = lagrangian.sparsity(probs)["params"]
    assert float(sparsity) == pytest.approx(0.0, abs=1e-6)
    probs["ffn"] = torch.zeros(2, 3)  # FFN weights and biases gone: 2*(15+12) of 254 removed
    assert float(lagrangian.sparsity(probs)["params"]) == pytest.approx(54 / 254)


def test_maskset_finalizes_like_finalize_masks():
    target = TargetSection(mode="targeted", layers=1, heads=1, ffn=2)
    masks = MaskSet(TINY, ["layer", "heads", "ffn"], init=3.0)
    with torch.no_grad():
        for a in masks.log_alpha.values():
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(4)))
    got = masks.finalized(target)
    want = finalize(masks.scores(), target, TINY)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert int(got["layer"].sum()) == 1 and int(got["heads"].sum()) == 1


def test_clamp_keeps_log_alpha_in_range():
    masks = MaskSet(TINY, ["ffn"], init=9.0)
    masks.clamp_()
    assert float(masks.log_alpha["ffn"].detach().max()) == pytest.approx(4.6)
