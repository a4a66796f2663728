"""Recipe values that pass validation and fail late are refused up front (exit 2, with file:line or
--set): a max_length past the base's positions, non-finite or absurd learning rates and sizes, values
of the wrong type (`--set train.steps=true`), a --set value that is not one TOML value. Weights that
stop being finite are never checkpointed, and an out-of-memory failure is a clear exit 4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.config import load_recipe
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import train
from bgeprune_cli.stages.train import TrainingDiverged
from bgeprune_cli.training import checkpoints
from conftest import SHORT_TRAIN

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.toml"
runner = CliRunner()


def check(*sets: str):
    return runner.invoke(app, ["check", str(SMOKE), *[a for s in sets for a in ("--set", s)]])


def message(result) -> str:
    return " ".join(result.output.split())


@pytest.mark.parametrize("setting, needle", [
    ("data.max_length=600", "--set: data.max_length: 600 is more than the base takes (128 tokens"),
    ("train.lr_weights=inf", "train.lr_weights: Input should be a finite number"),
    ("train.lr_weights=1e30", "train.lr_weights: Input should be less than or equal to 1"),
    ("train.lr_gates=nan", "train.lr_gates: Input should be a finite number"),
    ("train.batch_size=1000000000", "train.batch_size: Input should be less than or equal to 1000000"),
    ("train.steps=true", "train.steps: Input should be a valid integer"),
    ("train.steps=\"300\"", "train.steps: Input should be a valid integer"),
    ("train.steps=300\nsteps=1", "--set: train.steps: the value holds a line break"),
    ("distill.temperature=inf", "distill.temperature: Input should be a finite number"),
])
def test_values_that_would_fail_late_are_refused_by_check(setting, needle, builtin_cache):
    result = check(setting)
    assert result.exit_code == 2, result.output
    assert needle in message(result), message(result)


def test_a_set_value_that_is_not_one_value_is_refused_not_cut():
    result = check("train.steps=300, train.seed = 1")  # read whole, as a string: not 300
    assert result.exit_code == 2 and "--set: train.steps: Input should be a valid integer" in message(result)


def test_the_recipes_shipped_here_stay_valid_under_strict_types():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        load_recipe(path)


def test_weights_that_stop_being_finite_are_not_checkpointed(tmp_path, monkeypatch, builtin_cache):
    from bgeprune_cli.training.trainer import Trainer

    real, calls = Trainer.step, {"n": 0}

    def poisoning(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # what lr = 1e30 does on its first update
            with torch.no_grad():
                next(self.student.parameters()).fill_(float("inf"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", poisoning)
    loaded = load_recipe(SMOKE, [*SHORT_TRAIN, "train.max_bad_steps=3"], base_dims=recipe_base_dims)
    with pytest.raises(TrainingDiverged) as stopped:
        train.run(loaded, run_dir=tmp_path / "run")
    newest = checkpoints.latest(tmp_path / "run")
    assert newest is not None and newest.step == 4
    assert all(torch.isfinite(t).all() for t in newest.tensors("student").values())
    assert f"the last good checkpoint is {newest.artifact.path}" in str(stopped.value)


def test_out_of_memory_is_a_clear_exit_4(monkeypatch):
    from bgeprune_cli.stages import check as stage

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(stage, "run", exhausted)
    result = runner.invoke(app, ["check", str(SMOKE)])
    assert result.exit_code == 4 and "out of memory" in result.output and "train.batch_size" in result.output


def test_a_hub_base_config_is_fetched_once_per_recipe_load(monkeypatch, tmp_path, xlmr_dir):
    """Feasibility and the position limit both read config.json; a hub base is asked once, not twice (offline,
    each ask waits out the hub client's retries)."""
    import huggingface_hub

    from bgeprune_cli.models import loading

    calls = []

    def download(model, filename, revision=None):
        calls.append((model, filename))
        return str(xlmr_dir / "config.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    loading._hub_config_text.cache_clear()
    recipe = tmp_path / "hub.toml"
    recipe.write_text(SMOKE.read_text().replace('"builtin:tiny-xlm-roberta"', '"some-org/some-model"'))
    load_recipe(recipe, base_dims=recipe_base_dims, base_max_tokens=loading.recipe_max_tokens)
    assert calls == [("some-org/some-model", "config.json")]
    loading._hub_config_text.cache_clear()
