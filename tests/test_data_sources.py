"""`bgeprune check` says, before any model loads, whether every data source of a recipe can be read here:
local paths (named with the --set that replaces them), streamed datasets (opened, first record read),
an unreachable hub (exit 4, tried once, with how to use a local copy). All problems at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAD = '[base]\nmodel = "builtin:tiny-xlm-roberta"\n[target]\nlayers = 2\n'


def check(recipe: Path, *sets: str, offline: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_DATASETS_OFFLINE": "1" if offline else "0"}
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "bgeprune_cli", "check", str(recipe), *args, "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_every_missing_local_path_is_named_with_the_set_that_replaces_it(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(HEAD + f'[data]\ntrain = ["{ROOT}/recipes/corpora", "{tmp_path}/gone.txt"]\n'
                      f'[vocab]\ncorpus = ["{tmp_path}/texts/*.txt"]\n')
    out = check(recipe)
    assert out.returncode == 2, out.stderr
    message = one_line(out.stderr)
    assert "2 of the recipe's 3 data sources cannot be read here" in message
    assert f"data.train: {tmp_path}/gone.txt: matches no file" in message
    assert "--set data.train='[\"/path/to/your/data\"]'" in message
    assert f"vocab.corpus: {tmp_path}/texts/*.txt: matches no file" in message and "docs/data.md" in message


def test_a_streamed_local_dataset_is_opened_and_reported(tmp_path):
    (tmp_path / "de.jsonl").write_text(json.dumps({"body": "Hallo Welt"}) + "\n")
    (tmp_path / "fr.txt").write_text("Bonjour le monde\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(HEAD + '[data]\nstream = [\n'
                      f'  {{ dataset = "json", data_files = ["{tmp_path}/de.jsonl"], text_field = "body", '
                      f'weight = 2 }},\n'
                      f'  {{ dataset = "text", data_files = ["{tmp_path}/fr.txt"] }},\n]\n')
    out = check(recipe)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["data"]
    assert [r["key"] for r in rows] == ["data.stream[0]", "data.stream[1]"] and all(r["ok"] for r in rows)
    assert "first record has 'body', weight 2" in rows[0]["detail"]


def test_a_stream_whose_field_is_wrong_is_the_users_to_fix(tmp_path):
    (tmp_path / "de.jsonl").write_text(json.dumps({"body": "Hallo Welt"}) + "\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(HEAD + f'[data.stream]\ndataset = "json"\ndata_files = ["{tmp_path}/de.jsonl"]\n')
    out = check(recipe)
    assert out.returncode == 2 and "no field 'text' in its first record (its fields: body)" in one_line(out.stderr)


def test_an_unreachable_hub_is_tried_once_and_says_how_to_use_a_local_copy(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(HEAD + '[data]\nstream = [\n' + "".join(
        f'  {{ dataset = "HuggingFaceFW/fineweb-2", name = "{c}" }},\n' for c in ("deu_Latn", "fra_Latn", "jpn_Jpan"))
        + ']\n')
    out = check(recipe)
    assert out.returncode == 4, out.stderr
    message = one_line(out.stderr)
    assert "data.stream[0]: HuggingFaceFW/fineweb-2 deu_Latn [train]: dataset 'HuggingFaceFW/fineweb-2'" in message
    assert "not in this machine's hub cache and HF_HUB_OFFLINE is set" in message
    assert 'dataset = "parquet"' in message and "data_files" in message
    assert "data.stream[2]: HuggingFaceFW/fineweb-2 jpn_Jpan [train]: not tried" in message


@pytest.mark.parametrize("recipe", ["50pct.toml", "50pct-8gpu.toml", "50pct-compatible.toml", "50pct-matryoshka.toml",
                                    "50pct-10lang.toml",
                                    "bge-m3-10lang.toml"])
def test_the_bge_m3_recipes_name_data_a_user_has(recipe):
    """Public corpora streamed from the hub, never files beside this repository's checkout."""
    text = (ROOT / "recipes" / recipe).read_text()
    assert not [line for line in text.splitlines() if "shared/data" in line and not line.lstrip().startswith("#")]
    from bgeprune_cli.config import load_recipe

    data = load_recipe(ROOT / "recipes" / recipe).recipe.data
    assert not data.train and len(data.stream) >= 10
    assert all("/" in s.dataset and not s.data_files for s in data.stream)
    assert all("/" in s.dataset and not s.data_files for s in data.translation_sets)


def test_the_streamed_smoke_recipe_checks_offline():
    out = check(ROOT / "recipes" / "smoke-stream.toml")
    assert out.returncode == 0, out.stderr
    assert [row["ok"] for row in json.loads(out.stdout)["data"]] == [True, True]


@pytest.mark.slow
def test_the_streamed_smoke_recipe_header_runs_in_a_shell(tmp_path):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    header = (ROOT / "recipes" / "smoke-stream.toml").read_text().splitlines()[0].removeprefix("# ")
    out = subprocess.run(["bash", "-c", header], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("streamed from `text`, `text` mixed by weight"
            in (tmp_path / "out" / "smoke-stream" / "README.md").read_text())
