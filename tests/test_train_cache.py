"""`bgeprune train --teacher-cache` and `--gradient-checkpointing`: what they save, and that results stay the same.

The teacher's forward passes are counted by a forward pre-hook on the teacher module
(`teacher_forwards` in the run's info), so "the second run does no teacher forward" is measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bgeprune_cli.config import load_recipe
from bgeprune_cli.errors import UsageError
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import train
from conftest import SHORT_TRAIN

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.toml"


def _train(run_dir: Path, cache: Path | None, *sets: str, **kwargs) -> dict:
    loaded = load_recipe(SMOKE, [*SHORT_TRAIN, *sets], base_dims=recipe_base_dims)
    return train.run(loaded, run_dir=run_dir, teacher_cache=cache, device="cpu", **kwargs)


def _losses(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["terms"], r["penalty"])
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_second_run_does_no_teacher_forward_and_has_identical_losses(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path / "first", cache)
    assert first["teacher_forwards"] > 0 and first["teacher_cache"]["misses"] > 0
    second = _train(tmp_path / "second", cache)
    assert second["teacher_forwards"] == 0
    assert second["teacher_cache"]["misses"] == 0 and second["teacher_cache"]["hits"] == 16 * 8
    assert _losses(tmp_path / "first") == _losses(tmp_path / "second")
    a, b = (load_file(str(tmp_path / run / "train" / "student.safetensors")) for run in ("first", "second"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_changed_max_length_or_teacher_does_not_reuse_the_cache(tmp_path, xlmr_dir):
    cache = tmp_path / "cache"
    first = _train(tmp_path / "first", cache)
    shorter = _train(tmp_path / "shorter", cache, "data.max_length=32")
    assert shorter["teacher_forwards"] == first["teacher_forwards"] > 0
    assert shorter["teacher_cache"]["path"] != first["teacher_cache"]["path"]
    # The same architecture with one weight changed is another teacher.
    other = tmp_path / "other-teacher"
    shutil.copytree(xlmr_dir, other)
    weights = load_file(str(other / "model.safetensors"))
    name = next(k for k in weights if k.endswith("attention.output.dense.weight"))
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    changed = _train(tmp_path / "changed", cache, f"base.model={other}")
    assert changed["teacher_forwards"] == first["teacher_forwards"]
    assert changed["teacher_cache"]["path"] not in (first["teacher_cache"]["path"], shorter["teacher_cache"]["path"])
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 3


def test_layerwise_distillation_cannot_use_the_cache(tmp_path):
    with pytest.raises(UsageError, match="distill.layerwise"):
        _train(tmp_path / "run", tmp_path / "cache", "distill.layerwise=1.0")


def test_gradient_checkpointing_gives_the_same_training(tmp_path):
    plain = _train(tmp_path / "plain", None)
    checkpointed = _train(tmp_path / "ckpt", None, gradient_checkpointing=True)
    assert checkpointed["gradient_checkpointing"] and not plain["gradient_checkpointing"]
    for (s1, l1, t1, p1), (s2, l2, t2, p2) in zip(_losses(tmp_path / "plain"), _losses(tmp_path / "ckpt")):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5) and p1 == pytest.approx(p2, rel=1e-5, abs=1e-7)
    a, b = (load_file(str(tmp_path / run / "train" / "student.safetensors")) for run in ("plain", "ckpt"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_checkpointing_recomputes_layers_and_keeps_eval_outputs(xlmr_dir):
    from bgeprune_cli.models.loading import load_model
    from bgeprune_cli.training.distill_model import enable_checkpointing

    plain, checkpointed = load_model(xlmr_dir), load_model(xlmr_dir)
    enable_checkpointing(checkpointed)
    batch = {"input_ids": torch.tensor([[0, 5, 6, 7, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    calls = []
    checkpointed.encoder.layer[0].attention.register_forward_hook(lambda *args: calls.append(1))
    out = checkpointed(**batch).last_hidden_state
    out.sum().backward()
    assert len(calls) == 2  # once forward, once recomputed in backward: activations were not kept
    assert torch.equal(out.detach(), plain(**batch).last_hidden_state.detach())  # no dropout
