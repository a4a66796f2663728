"""bge-m3 heads: safe loading of the .pt files, and the three modes' outputs and scores by hand."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from torch import nn

from bgeprune_cli.errors import ArtifactError
from bgeprune_cli.models import m3
from bgeprune_cli.models.loading import resolve_base
from bgeprune_cli.training.losses import colbert_in_batch_scores, sparse_mse


@pytest.fixture()
def m3_copy(tmp_path, builtin_cache):
    target = tmp_path / "m3"
    shutil.copytree(resolve_base("builtin:tiny-bge-m3"), target)
    return target


class _Payload:
    """Unpickling this would create `marker`: a stand-in for any code-executing payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_builtin_heads_load_like_upstream_files(m3_copy):
    heads = m3.load_heads(m3_copy, hidden=64)
    assert heads.file_dtype == torch.float16
    assert tuple(heads.colbert_linear.weight.shape) == (64, 64) and tuple(heads.sparse_linear.weight.shape) == (1, 64)
    raw = torch.load(m3_copy / m3.COLBERT_FILE, weights_only=True)
    assert set(raw) == {"weight", "bias"} and raw["weight"].dtype == torch.float16


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_code_executing_payload_is_refused_without_running(m3_copy, tmp_path, how):
    marker = tmp_path / "pwned"
    path = m3_copy / m3.COLBERT_FILE
    if how == "torch.save":
        torch.save({"weight": _Payload(marker), "bias": torch.zeros(64)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ArtifactError, match="refused without running anything"):
        m3.load_heads(m3_copy)
    assert not marker.exists()


def test_pickled_module_is_refused(m3_copy):
    torch.save(nn.Linear(64, 64), m3_copy / m3.COLBERT_FILE)  # a whole module, not a state dict
    with pytest.raises(ArtifactError, match="not a plain state dict"):
        m3.load_heads(m3_copy)


def test_wrong_keys_and_wrong_shapes_are_refused(m3_copy):
    torch.save({"linear.weight": torch.zeros(1, 64), "bias": torch.zeros(1)}, m3_copy / m3.SPARSE_FILE)
    with pytest.raises(ArtifactError, match="exactly the tensors 'weight' and 'bias'"):
        m3.load_heads(m3_copy)
    torch.save({"weight": torch.zeros(2, 64), "bias": torch.zeros(2)}, m3_copy / m3.SPARSE_FILE)
    with pytest.raises(ArtifactError, match="not the shapes"):
        m3.load_heads(m3_copy)
    torch.save({"weight": torch.zeros(1, 64), "bias": torch.zeros(1)}, m3_copy / m3.SPARSE_FILE)
    with pytest.raises(ArtifactError, match="hidden size is 32"):
        m3.load_heads(m3_copy, hidden=32)  # heads left unpruned beside a pruned encoder


def test_one_head_file_without_the_other_explains_random_heads(m3_copy):
    (m3_copy / m3.SPARSE_FILE).unlink()
    with pytest.raises(ArtifactError, match="silently create random sparse and ColBERT heads"):
        m3.load_heads(m3_copy)


def test_no_head_files_means_not_bge_m3_style(xlmr_dir):
    assert m3.load_heads(xlmr_dir) is None and not m3.has_heads(xlmr_dir)


# ---------------------------------------------------------------- outputs and scores, by hand


def test_lexical_weights_drop_specials_and_padding_and_keep_the_max_per_token():
    weights = torch.tensor([[0.9, 0.2, 0.5, 0.0, 0.7, 0.3], [0.8, 0.4, 0.6, 0.9, 0.0, 0.0]])
    ids = torch.tensor([[0, 10, 10, 11, 2, 1], [0, 12, 3, 2, 1, 1]])  # 0 CLS, 2 EOS, 1 PAD, 3 UNK
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    rows = m3.lexical_weights(weights, ids, mask, special={0, 1, 2, 3})
    assert rows == [{10: pytest.approx(0.5)}, {12: pytest.approx(0.4)}]  # 11 had weight 0: dropped


def test_sparse_score_is_the_sum_over_shared_tokens():
    q = [{5: 0.5, 7: 0.2}, {9: 1.0}]
    p = [{5: 0.4, 8: 3.0}, {7: 0.5, 5: 1.0}]
    assert torch.allclose(m3.sparse_scores(q, p), torch.tensor([[0.2, 0.6], [0.0, 0.0]]))


def test_colbert_score_is_the_mean_of_each_query_tokens_best_match():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]])
    # query token 1 -> best 1.0 (p1); query token 2 -> best 0.8 (p0); mean 0.9
    assert m3.colbert_scores([q], [p]).item() == pytest.approx(0.9)


def test_combined_score_is_the_weighted_mean():
    one = torch.ones(1, 1)
    assert m3.combined_scores(one * 0.9, one * 0.3, one * 0.6, (0.4, 0.2, 0.4)).item() == pytest.approx(
        (0.9 * 0.4 + 0.3 * 0.2 + 0.6 * 0.4) / 1.0)


def test_in_batch_colbert_scores_used_in_training_equal_the_per_text_scores():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    heads = m3.M3Heads(8, 8)
    vectors = heads.colbert_vectors(torch.randn(3, 5, 8), mask)
    per_text = m3.colbert_per_text(vectors, mask)
    assert torch.allclose(colbert_in_batch_scores(vectors, mask), m3.colbert_scores(per_text, per_text), atol=1e-6)


def test_masked_heads_equal_sliced_heads_on_the_kept_dims():
    """The hidden mask's definition for the heads: what slicing them to the kept dims computes."""
    torch.manual_seed(0)
    heads = m3.M3Heads(8, 8)
    keep = [0, 2, 3, 6]
    z = torch.zeros(8).index_fill(0, torch.tensor(keep), 1.0)
    states = torch.randn(2, 5, 8) * z  # a masked model's states are zero on pruned dims
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    sliced = heads.sliced(keep, base_hidden=8)
    kept_states = states[..., keep]
    assert torch.allclose(heads.token_weights(states), sliced.token_weights(kept_states), atol=1e-6)
    full = heads.colbert_vectors(states, mask, z)
    assert torch.allclose(full[..., keep], sliced.colbert_vectors(kept_states, mask), atol=1e-6)
    assert torch.count_nonzero(full[..., [1, 4, 5, 7]]) == 0


def test_sparse_distillation_revives_a_dead_token():
    """A token the student pushed below zero must still be pulled back to the teacher's weight."""
    logits = torch.tensor([[-0.5, 0.2]], requires_grad=True)
    teacher = torch.tensor([[0.3, 0.0]])
    loss = sparse_mse(logits, teacher, torch.ones(1, 2))
    loss.backward()
    assert logits.grad[0, 0] < 0  # gradient descent raises the dead token toward 0.3
    assert logits.grad[0, 1] > 0  # and lowers a weight the teacher does not have
    assert loss.item() == pytest.approx(((-0.5 - 0.3) ** 2 + 0.2 ** 2) / 2)
