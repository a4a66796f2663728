"""`train --report-to`: metrics.jsonl's scalars in accelerate's trackers (TensorBoard here, for real), and
the refusals: an unknown tracker exits 2, a missing package exits 4, both before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.config import load_recipe
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import train
from bgeprune_cli.training.trackers import TRACKING, scalars
from conftest import SHORT_TRAIN

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.toml"
runner = CliRunner()


def test_scalars_flatten_a_metrics_record():
    record = {"step": 3, "phase": "recover", "loss": 0.5, "terms": {"cosine": 0.25}, "penalty": 0.0,
              "gaps": {"layers": -1.0}, "finite": True, "expected": {"layers": 2.5, "encoder_fraction": 0.4},
              "lambda_1": {"layers": 0.1}, "lr": [1e-4, 2e-2], "bad_steps": 0, "elapsed_s": 1.5}
    assert scalars(record) == {"loss": 0.5, "terms/cosine": 0.25, "penalty": 0.0, "gaps/layers": -1.0, "finite": 1.0,
                               "expected/layers": 2.5, "expected/encoder_fraction": 0.4, "lambda_1/layers": 0.1,
                               "lr/0": 1e-4, "lr/1": 2e-2, "bad_steps": 0.0, "elapsed_s": 1.5, "recovering": 1.0}


def test_tensorboard_gets_every_logged_step_of_metrics_jsonl(tmp_path, builtin_cache):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train.run(load_recipe(SMOKE, SHORT_TRAIN, base_dims=recipe_base_dims), run_dir=run_dir, report_to=["tensorboard"])
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    [logs] = [p for p in (run_dir / TRACKING).iterdir() if p.is_dir()]
    events = EventAccumulator(str(logs))
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [line["step"] for line in lines]
    assert [e.value for e in loss] == pytest.approx([line["loss"] for line in lines], rel=1e-6)
    assert {"expected/layers", "lambda_1/layer", "recovering", "lr/0"} <= set(events.Tags()["scalars"])


def test_unknown_tracker_exits_2_and_a_missing_one_exits_4_before_anything_is_written(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", str(SMOKE), "--run-dir", str(run_dir), "--report-to", "tensorbored"])
    assert result.exit_code == 2 and "unknown tracker 'tensorbored'" in result.stderr
    assert "tensorboard, wandb" in result.stderr and not run_dir.exists()
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    result = runner.invoke(app, ["train", str(SMOKE), "--run-dir", str(run_dir), "--report-to", "wandb"])
    assert result.exit_code == 4 and "pip install wandb" in result.stderr and not run_dir.exists()
