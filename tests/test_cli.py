"""The CLI: the smoke recipe's header command end to end, and every bad input's exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgeprune_cli import __version__
from bgeprune_cli.cli import app

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "recipes" / "smoke.toml"
runner = CliRunner()


def invoke(*args, cwd: Path | None = None):
    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


@pytest.mark.parametrize("name", ["smoke", "smoke-m3"])
def test_smoke_recipe_header_command_runs_end_to_end(tmp_path, name):
    recipe = ROOT / "recipes" / f"{name}.toml"
    command = recipe.read_text().splitlines()[0].removeprefix("# ").replace(f"recipes/{name}.toml", str(recipe))
    proc = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified" in proc.stdout
    for stage in ("train", "masks", "pruned"):
        assert (tmp_path / "runs" / name / stage / "manifest.json").is_file()
    out = tmp_path / "out" / name
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["hidden_size"],
            config["intermediate_size"]) == (2, 2, 32, 64)
    assert "auto_map" not in config and config["architectures"] == ["XLMRobertaModel"]
    assert (out / "colbert_linear.pt").is_file() == (out / "sparse_linear.pt").is_file() == (name == "smoke-m3")


@pytest.fixture()
def smoke_run(tmp_path):
    result = invoke("magnitude", SMOKE, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_version_and_help_have_examples():
    assert invoke("--version").stdout.strip() == f"bgeprune {__version__}"
    for command in ("check", "magnitude", "finalize-masks", "prune", "export-hf", "verify", "push"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.stdout, command


def test_install_lines_in_every_help_survive_rich_markup(monkeypatch):
    """Rich reads `[onnx]` as a markup tag and drops it: every help that names an extra must still show it."""
    import re

    import typer.main

    monkeypatch.setenv("COLUMNS", "400")  # one line per option: the install line is never split
    commands = [c.name or c.callback.__name__.replace("_", "-") for c in typer.main.get_group(app).commands.values()]
    shown = {}
    for command in commands:
        result = invoke(command, "--help")
        assert result.exit_code == 0, command
        shown[command] = re.findall(r"pip install[^)\n│]*", result.stdout)
        for line in shown[command]:
            assert "'.'" not in line and "''" not in line, (command, line)
    assert all(any("'.[onnx]'" in line for line in shown[c]) for c in ("export-hf", "export-onnx", "bench")), shown


def test_json_output_is_one_object(smoke_run):
    result = invoke("finalize-masks", smoke_run / "train", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["sizes"] == {"layers": 2, "heads": 2, "ffn": 64, "hidden": 32} and summary["stock_shape"]


@pytest.mark.parametrize("text,needle", [
    ('[base]\nmodel = "builtin:tiny-bert"\n[target\n', ":3: toml:"),
    ('[base]\nmodel = "builtin:tiny-bert"\n[target]\nlayers = 2\nlayerz = 1\n', ":5: target.layerz: unknown key"),
    ('[base]\nmodel = "builtin:tiny-bert"\n[target]\nheads = 9\nhidden = 144\n', "more than the base model has (4)"),
    ('[base]\nmodel = "builtin:tiny-bert"\n[target]\nlayers = 0\n', "must be at least 1"),
])
def test_bad_recipes_exit_2_before_loading_anything(tmp_path, text, needle):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    result = invoke("magnitude", recipe, cwd=tmp_path)
    assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_base_model_is_an_environment_error(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[base]\nmodel = "./no-such-model"\n[target]\nlayers = 1\n')
    result = invoke("check", recipe)
    assert result.exit_code == 4 and "no-such-model" in result.stderr


def test_sparsity_recipe_cannot_use_magnitude(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[base]\nmodel = "builtin:tiny-bert"\n[target]\nmode = "sparsity"\nsparsity = 0.5\n')
    result = invoke("magnitude", recipe, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "needs a targeted recipe" in result.stderr


def test_wrong_kind_and_missing_artifacts_exit_3(smoke_run):
    result = invoke("prune", smoke_run / "train")
    assert result.exit_code == 3
    assert "has kind 'train-run'; 'prune' needs 'masks' (the output of 'bgeprune finalize-masks')" in result.stderr
    result = invoke("export-hf", smoke_run / "nowhere", smoke_run / "out")
    assert result.exit_code == 3 and "does not exist" in result.stderr


def test_tampered_input_exits_3_and_writes_nothing(smoke_run):
    gates = smoke_run / "train" / "gates.safetensors"
    gates.write_bytes(gates.read_bytes()[:-4] + b"\0\0\0\0")
    result = invoke("finalize-masks", smoke_run / "train")
    assert result.exit_code == 3 and "tampered or corrupt" in result.stderr
    assert sorted(p.name for p in smoke_run.iterdir()) == ["train"]


def test_existing_output_exits_2_and_is_kept(smoke_run):
    assert invoke("finalize-masks", smoke_run / "train").exit_code == 0
    before = (smoke_run / "masks" / "manifest.json").read_bytes()
    result = invoke("finalize-masks", smoke_run / "train")
    assert (result.exit_code == 2 and "holds a previous masks" in result.stderr
            and "--force replaces it" in result.stderr)
    assert (smoke_run / "masks" / "manifest.json").read_bytes() == before
    assert invoke("finalize-masks", smoke_run / "train", "--force").exit_code == 0


def test_interrupt_exits_130_and_leaves_no_partial_output(smoke_run, monkeypatch):
    from bgeprune_cli.stages import finalize_masks

    def interrupted(*args, **kwargs):
        from bgeprune_cli.artifacts import write_artifact

        with write_artifact(smoke_run / "masks", "masks") as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt

    monkeypatch.setattr(finalize_masks, "run", interrupted)
    result = invoke("finalize-masks", smoke_run / "train")
    assert result.exit_code == 130
    assert sorted(p.name for p in smoke_run.iterdir()) == ["train"]


def test_export_format_is_validated(smoke_run):
    result = invoke("export-hf", smoke_run, smoke_run / "out", "--format", "onnx")
    assert result.exit_code == 2 and "'stock' or 'padded'" in result.stderr


@pytest.mark.parametrize("command", ["export-hf", "export-onnx", "bench"])
def test_help_keeps_the_extras_install_line(command):
    """rich reads `[onnx]` as markup unless escaped; the help must still say how to install the extra."""
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0
    compact = "".join(c for c in result.output if not c.isspace() and c not in "│╭╮╰╯─")
    assert "pipinstall-e'.[onnx]'" in compact
