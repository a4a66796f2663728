"""`train` and `finalize-masks` warn when the pruning phase ended far from the target (exit 0 still)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.training.convergence import pruning_gap_warning

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.toml"
SIZES = {"layers": 2, "heads": 2, "ffn": 64, "hidden": 32}


def info(expected_params: float, **expected) -> dict:
    return {"method": "l0", "prune_steps": 10, "encoder_params": 17_088, "final_sizes": SIZES,
            "expected": {**SIZES, **expected, "encoder_params": expected_params}}


def test_a_far_gap_is_named_with_the_furthest_axis_and_what_to_change():
    message = pruning_gap_warning(info(90_516, ffn=300.0, layers=3.9))
    assert "90,516 expected encoder parameters against 17,088 finalized (5.30×)" in message
    assert "furthest: ffn 300.0 expected against 64" in message and "train.steps" in message
    assert "bgeprune train --masks" in message


def test_close_runs_and_recovery_only_runs_get_no_warning():
    assert pruning_gap_warning(info(18_000)) is None  # 5% over
    assert pruning_gap_warning(info(13_000)) is not None  # 24% under: below 1 / 1.25
    assert pruning_gap_warning({**info(90_516), "method": "fixed-masks", "prune_steps": 0}) is None


def test_a_run_too_short_to_search_warns_in_train_and_in_finalize_masks(tmp_path):
    run = tmp_path / "run"
    sets = ["train.steps=3", "train.recovery_steps=0", "train.target_warmup_steps=3", "train.log_every=1"]
    result = CliRunner().invoke(app, ["train", str(SMOKE), "--run-dir", str(run),
                                      *[w for s in sets for w in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "warning: the gates ended the pruning phase far from the target" in result.stderr
    result = CliRunner().invoke(app, ["finalize-masks", str(run / "train")])
    assert result.exit_code == 0 and "warning: the gates ended the pruning phase" in result.stderr
