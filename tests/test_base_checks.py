"""A base that loads but cannot be trained on correctly is refused by `check` and by every stage that
reads it, before any work, as a bad model file (exit 3): no tokenizer files (transformers would build
an empty vocabulary and a run would distil on <unk>), a vocabulary that is not the model's, a family
bgeprune does not prune, a config with more layers than the weights, a modules.json leaving the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.models.loading import resolve_base

ROOT = Path(__file__).resolve().parents[1]
SMOKE = (ROOT / "recipes" / "smoke.toml").read_text()
runner = CliRunner()


def base_copy(tmp_path: Path, name: str = "builtin:tiny-xlm-roberta") -> Path:
    base = tmp_path / "base"
    shutil.copytree(resolve_base(name), base)
    return base


def recipe_for(tmp_path: Path, base: Path) -> Path:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SMOKE.replace('model = "builtin:tiny-xlm-roberta"', f"model = {json.dumps(str(base))}"))
    return recipe


def edit_config(base: Path, **changes) -> None:
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, **changes}))


def refused(tmp_path: Path, base: Path, needle: str, commands=("check", "magnitude", "train")) -> None:
    recipe = recipe_for(tmp_path, base)
    for command in commands:
        result = runner.invoke(app, [command, str(recipe), "--run-dir", str(tmp_path / "run")]
                               if command != "check" else [command, str(recipe)])
        assert result.exit_code == 3, (command, result.output)
        assert needle in " ".join(result.output.split()), (command, result.output)
        assert not (tmp_path / "run" / "train").exists()


def test_a_base_without_tokenizer_files_is_refused_before_any_work(tmp_path, builtin_cache):
    base = base_copy(tmp_path)
    for name in ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json"):
        (base / name).unlink(missing_ok=True)
    refused(tmp_path, base, "has no tokenizer files (expected tokenizer.json")


def test_a_vocabulary_that_is_not_the_models_is_refused(tmp_path, builtin_cache):
    base = base_copy(tmp_path, "builtin:tiny-bert")
    (base / "tokenizer.json").unlink(missing_ok=True)
    (base / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    refused(tmp_path, base, "turns the probe text into <unk>", commands=("check",))


def test_a_family_bgeprune_does_not_prune_is_a_bad_model_file(tmp_path, builtin_cache):
    base = base_copy(tmp_path)
    edit_config(base, model_type="gpt2")
    refused(tmp_path, base, "model_type 'gpt2' is not supported", commands=("check", "magnitude"))


def test_a_config_with_more_layers_than_the_weights_is_refused(tmp_path, builtin_cache):
    base = base_copy(tmp_path)
    edit_config(base, num_hidden_layers=4)
    refused(tmp_path, base, "says num_hidden_layers = 4, but the weights hold 3 layers",
            commands=("check", "magnitude"))


def test_check_refuses_a_modules_json_that_leaves_the_directory(tmp_path, builtin_cache):
    base = base_copy(tmp_path)
    modules = json.loads((base / "modules.json").read_text())
    modules[1]["path"] = "../../elsewhere"
    (base / "modules.json").write_text(json.dumps(modules))
    refused(tmp_path, base, "a module's folder must be inside the model directory", commands=("check", "magnitude"))


@pytest.mark.parametrize("name", ["builtin:tiny-xlm-roberta", "builtin:tiny-bert", "builtin:tiny-bge-m3"])
def test_the_builtin_bases_pass(name, builtin_cache):
    from bgeprune_cli.models.base_checks import check_base

    check_base(resolve_base(name))
