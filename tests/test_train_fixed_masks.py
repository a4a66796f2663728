"""`bgeprune train --masks`: recovery only, with masks from a masks artifact, checked, resumable."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.config import load_recipe
from bgeprune_cli.errors import ArtifactError, UsageError
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import finalize_masks, magnitude, train
from bgeprune_cli.training import interrupt
from bgeprune_cli.training.fixed_masks import fingerprint

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.toml"
RECOVERY = ["train.recovery_steps=4", "train.checkpoint_every=2", "train.log_every=1"]


def recipe(*sets: str):
    return load_recipe(SMOKE, list(sets), base_dims=recipe_base_dims)


def cli_args(*extra: str, sets=RECOVERY) -> list[str]:
    return ["train", str(SMOKE), *[a for s in sets for a in ("--set", s)], *extra]


def student(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "train" / "student.safetensors"))


@pytest.fixture(scope="module")
def scored(tmp_path_factory, builtin_cache) -> Path:
    """`bgeprune magnitude` + finalize-masks on the smoke recipe: RUN/masks, the training-free choice."""
    run_dir = tmp_path_factory.mktemp("magnitude") / "run"
    magnitude.run(recipe(), run_dir=run_dir)
    finalize_masks.run(run_dir / "train")
    return run_dir / "masks"


def test_cli_recovers_with_the_artifacts_masks_exactly_as_the_python_api(scored, tmp_path):
    masks = {k: v.to(torch.bool) for k, v in load_file(str(scored / "masks.safetensors")).items()}
    result = CliRunner().invoke(app, cli_args("--masks", str(scored), "--run-dir", str(tmp_path / "cli"), "--json"))
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["method"] == "fixed-masks" and info["prune_steps"] == 0 and info["steps"] == 4
    assert info["fixed_masks"] == {"source": str(scored), "sha256": fingerprint(masks)}

    train.run(recipe(*RECOVERY), run_dir=tmp_path / "api", fixed_masks=masks)
    ours, theirs = student(tmp_path / "cli"), student(tmp_path / "api")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    finalize_masks.run(tmp_path / "cli" / "train")  # checks the recovery masks against its own choice
    final = load_file(str(tmp_path / "cli" / "masks" / "masks.safetensors"))
    assert final.keys() == masks.keys() and all(torch.equal(final[k], masks[k]) for k in masks)


def test_masks_for_another_target_are_refused_before_training(scored, tmp_path):
    with pytest.raises(UsageError, match=r"keeps layers 2, heads 2 per layer, ffn 64 per layer, hidden 32, but the "
                                         r"recipe's \[target\] asks for layers 1, heads 2, ffn 64, hidden 32"):
        train.run(recipe(*RECOVERY, "target.layers=1"), run_dir=tmp_path / "run", masks=scored)
    with pytest.raises(UsageError, match=r"holds masks \['ffn', 'heads', 'hidden', 'layer'\], but the recipe's "
                                         r"\[target\] prunes \['ffn', 'layer'\]"):
        train.run(recipe(*RECOVERY, "target.heads=4", "target.hidden=64"), run_dir=tmp_path / "run", masks=scored)
    assert not (tmp_path / "run").exists()  # refused before the run dir was touched


def test_masks_of_another_shape_are_refused(scored, tmp_path):
    masks = {k: v.to(torch.bool) for k, v in load_file(str(scored / "masks.safetensors")).items()}
    masks["layer"] = torch.tensor([True, True, False, False])  # the smoke base has 3 layers
    with pytest.raises(UsageError, match=r"gate 'layer' has shape \(4,\), expected \(3,\); masks only fit"):
        train.run(recipe(*RECOVERY), run_dir=tmp_path / "run", fixed_masks=masks)
    assert not (tmp_path / "run").exists()


def test_masks_of_another_base_are_refused(scored, tmp_path):
    other = tmp_path / "masks"
    manifest = json.loads((scored / "manifest.json").read_text())
    manifest["recipe"]["base"]["model"] = "BAAI/bge-m3"
    other.mkdir()
    save_file(load_file(str(scored / "masks.safetensors")), str(other / "masks.safetensors"))
    manifest["files"] = [f for f in manifest["files"] if f["path"] == "masks.safetensors"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="made for base 'BAAI/bge-m3'"):
        train.run(recipe(*RECOVERY), run_dir=tmp_path / "run", masks=other)


def test_a_train_run_or_missing_dir_is_not_a_masks_artifact(scored, tmp_path):
    result = CliRunner().invoke(app, cli_args("--masks", str(scored.parent / "train"), "--run-dir", str(tmp_path)))
    assert result.exit_code == ArtifactError.exit_code and "has kind 'train-run'" in result.output
    with pytest.raises(ArtifactError, match="does not exist"):
        train.run(recipe(*RECOVERY), run_dir=tmp_path / "run", masks=tmp_path / "nowhere")


def test_masks_inside_the_run_dir_they_would_replace_are_refused(scored):
    result = CliRunner().invoke(app, cli_args("--masks", str(scored), "--run-dir", str(scored.parent)))
    assert result.exit_code == UsageError.exit_code
    assert "lies in the run dir this training would write" in result.output and "--run-dir" in result.output
    assert (scored.parent / "train" / "manifest.json").is_file()  # the magnitude run is untouched


class InterruptAtOnce(interrupt.StopRequest):  # as if Ctrl-C came during the first step
    def __enter__(self):
        super().__enter__()
        self.requested = True
        return self


def test_an_interrupted_recovery_resumes_only_with_its_own_masks(scored, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(interrupt, "StopRequest", InterruptAtOnce)
    stopped = CliRunner().invoke(app, cli_args("--masks", str(scored), "--run-dir", str(run_dir)))
    monkeypatch.undo()
    assert stopped.exit_code == 130, stopped.output
    hint = shlex.split(stopped.stderr.split("Continue with:")[1].strip().splitlines()[0])
    assert hint[hint.index("--masks") + 1] == str(scored) and "--resume" in hint

    without = [w for i, w in enumerate(hint[1:]) if w != "--masks" and hint[i] != "--masks"]
    refused = CliRunner().invoke(app, without)
    assert refused.exit_code == UsageError.exit_code and f"resume with --masks {scored}" in refused.output

    l0_sets = ["train.steps=2", "train.target_warmup_steps=1"] + RECOVERY
    l0 = CliRunner().invoke(app, cli_args("--run-dir", str(tmp_path / "l0"), sets=l0_sets))
    assert l0.exit_code == 0, l0.output
    mixed = CliRunner().invoke(app, cli_args("--masks", str(scored), "--run-dir", str(tmp_path / "l0"),
                                             "--resume", "--force"))
    assert mixed.exit_code == UsageError.exit_code and "it is an L0 run" in mixed.output

    resumed = CliRunner().invoke(app, hint[1:])
    assert resumed.exit_code == 0, resumed.output
    uninterrupted = tmp_path / "straight"
    train.run(recipe(*RECOVERY), run_dir=uninterrupted, masks=scored)
    ours, theirs = student(run_dir), student(uninterrupted)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
