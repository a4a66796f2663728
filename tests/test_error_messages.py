"""Failures outside bgeprune say what happened, name the file, and exit with the right code: a full
disk or read-only location (4), a truncated or malformed base (3), a wrong or future artifact (3) —
never "internal error"."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.models import m3
from bgeprune_cli.models.loading import resolve_base
from bgeprune_cli.stages import export_hf, prune
from conftest import SHORT_TRAIN, keep_only, make_run

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.toml"
runner = CliRunner()


def _base_copy(tmp_path: Path, name: str = "builtin:tiny-xlm-roberta") -> Path:
    base = tmp_path / "base"
    shutil.copytree(resolve_base(name), base)
    return base


def _recipe(tmp_path: Path, base: Path | str) -> Path:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SMOKE.read_text().replace('model = "builtin:tiny-xlm-roberta"',
                                                f"model = {json.dumps(str(base))}"))
    assert str(base) in recipe.read_text()
    return recipe


@pytest.fixture()
def pruned_run(tmp_path, builtin_cache) -> Path:
    run = make_run(tmp_path / "run", "builtin:tiny-xlm-roberta", {"layer": keep_only(3, 0, 2)})
    prune.run(run / "masks")
    return run


# ---------------------------------------------------------------- environment: full disk, read-only (exit 4)


def _with_file_size_limit(limit: int):
    def limit_writes():  # the same OSError a full disk gives (EFBIG here, ENOSPC there), from the kernel
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


def test_a_write_that_fails_for_lack_of_space_is_an_environment_error_and_leaves_nothing(pruned_run, tmp_path):
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "bgeprune_cli", "export-hf", str(pruned_run), str(out)],
                          capture_output=True, text=True, preexec_fn=_with_file_size_limit(20_000), timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert f"writing {out} failed" in proc.stderr and "File too large" in proc.stderr
    assert "internal error" not in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_train_checkpoint_on_a_full_disk_is_an_environment_error(tmp_path, builtin_cache):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bgeprune_cli", "train", str(SMOKE), "--run-dir", str(run_dir),
                           *[a for s in SHORT_TRAIN for a in ("--set", s)]], capture_output=True, text=True,
                          preexec_fn=_with_file_size_limit(200_000), timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert "failed" in proc.stderr and "File too large" in proc.stderr and "unexpected pos" not in proc.stderr
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_a_read_only_output_location_is_refused_before_any_work(pruned_run, tmp_path, monkeypatch):
    readonly = tmp_path / "readonly"
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(readonly)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    readonly.mkdir()
    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(export_hf, "load_file", lambda *a, **k: pytest.fail("work started before the check"))
    result = runner.invoke(app, ["export-hf", str(pruned_run), str(readonly / "out")])
    assert result.exit_code == 4, result.output
    assert f"creating the lock file for {readonly / 'out'} failed" in result.stderr
    assert "Read-only file system" in result.stderr and "choose a writable location" in result.stderr


# ---------------------------------------------------------------- bad base model files (exit 3), before any work


def test_check_catches_a_truncated_base_weights_file(tmp_path, builtin_cache):
    base = _base_copy(tmp_path)
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size - 100])
    for command in ("check", "train"):
        result = runner.invoke(app, [command, str(_recipe(tmp_path, base)), "--set",
                                     "run.dir=" + json.dumps(str(tmp_path / "r"))])
        assert result.exit_code == 3, (command, result.output)
        assert f"{weights} is truncated or corrupt" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda text: text[:-20], "is not valid JSON"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "intermediate_size"}),
     "lacks intermediate_size"),
    (lambda text: json.dumps({**json.loads(text), "num_hidden_layers": "three"}), "num_hidden_layers = 'three'"),
])
def test_check_catches_a_malformed_base_config(tmp_path, builtin_cache, edit, needle):
    base = _base_copy(tmp_path)
    (base / "config.json").write_text(edit((base / "config.json").read_text()))
    result = runner.invoke(app, ["check", str(_recipe(tmp_path, base))])
    assert result.exit_code == 3, result.output
    assert str(base / "config.json") in result.stderr and needle in result.stderr


def test_a_base_directory_that_does_not_exist_says_so(tmp_path):
    result = runner.invoke(app, ["check", str(_recipe(tmp_path, tmp_path / "no-such-model"))])
    assert result.exit_code == 4 and "does not exist" in result.stderr and "config.json" not in result.stderr


# ---------------------------------------------------------------- verify reads exports like every stage reads artifacts


@pytest.fixture()
def export(pruned_run, tmp_path) -> Path:
    export_hf.run(pruned_run, tmp_path / "out")
    return tmp_path / "out"


def _edit_manifest(export: Path, edit) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    edit(manifest)
    (export / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.update(schema_version=99), "schema_version 99, newer than this bgeprune"),
    (lambda m: m["files"][0].pop("sha256"), "has no valid sha256"),
    (lambda m: m.update(files="all of them"), "'files' is not a list"),
])
def test_verify_refuses_a_future_or_corrupt_manifest(export, edit, needle):
    _edit_manifest(export, edit)
    result = runner.invoke(app, ["verify", str(export)])
    assert result.exit_code == 3, result.output
    assert needle in result.stderr and "verified" not in result.stdout


def test_verify_refuses_a_malformed_manifest_and_other_artifact_kinds(export, pruned_run):
    result = runner.invoke(app, ["verify", str(pruned_run / "pruned")])
    assert result.exit_code == 3
    assert "has kind 'pruned-model'; 'verify' needs 'hf-model' (the output of 'bgeprune export-hf')" in result.stderr
    (export / "manifest.json").write_text("{not json")
    result = runner.invoke(app, ["verify", str(export)])
    assert result.exit_code == 3 and "manifest.json is corrupt" in result.stderr


def test_an_export_without_a_manifest_is_verified_as_a_foreign_model_and_says_so(export):
    (export / "manifest.json").unlink()
    result = runner.invoke(app, ["verify", str(export), "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 0, result.output
    assert checks["manifest"]["status"] == "skip" and "foreign model" in checks["manifest"]["message"]


# ---------------------------------------------------------------- messages


def test_refused_head_file_never_suggests_weights_only_false(tmp_path, builtin_cache):
    base = _base_copy(tmp_path, "builtin:tiny-bge-m3")
    torch.save(torch.nn.Linear(64, 64), base / m3.COLBERT_FILE)  # a pickled module, not a state dict
    with pytest.raises(Exception) as info:
        m3.load_heads(base)
    message = str(info.value)
    assert "refused without running anything" in message and "torch.nn.modules.linear.Linear" in message
    assert "weights_only" not in message


def test_user_text_with_brackets_survives_rich_markup(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SMOKE.read_text().replace('train = ["builtin:probe"]', "train = []"))
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 2 and "[data.stream]" in result.stderr, result.stderr


# ---------------------------------------------------------------- second pass: messages that misled


def test_bench_compare_with_a_missing_path_or_a_file_says_so(tmp_path, builtin_cache):
    for compare, needle in ((tmp_path / "nowhere", "does not exist; check the path"),
                            (SMOKE, "is a file, not a model directory")):
        result = runner.invoke(app, ["bench", "builtin:tiny-bert", "--compare", str(compare), "--no-memory",
                                     "--batch-sizes", "2", "--seq-lengths", "8", "-o", str(tmp_path / "b")])
        assert result.exit_code == 4, result.output
        assert needle in " ".join(result.output.split()) and "fix base.model in the recipe" not in result.output


def test_export_of_a_run_one_stage_short_names_the_stage_to_run(tmp_path, builtin_cache):
    run = make_run(tmp_path / "run", "builtin:tiny-xlm-roberta", {"layer": keep_only(3, 0, 2)})
    result = runner.invoke(app, ["export-hf", str(run), str(tmp_path / "out")])
    assert result.exit_code == 3
    assert f"run 'bgeprune prune {run}/masks' first" in " ".join(result.output.split())


@pytest.mark.parametrize("args, code", [
    (["check", str(SMOKE), "--set", "train.steps=0"], 2),
    (["export-hf", "/nonexistent/run", "/tmp/never-written"], 3),
    (["verify", "/nonexistent/export"], 3),
])
def test_json_errors_are_one_object_on_stdout(args, code):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code
    assert json.loads(result.stdout) == {"error": json.loads(result.stdout)["error"], "exit": code}


def test_bench_refuses_an_unknown_dtype_before_loading_anything(tmp_path):
    result = runner.invoke(app, ["bench", "builtin:tiny-bert", "--dtype", "float8", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "--dtype must be float32, float16 or bfloat16, not 'float8'" in result.output
    assert "loading" not in result.output
    assert not (tmp_path / "b").exists()
