"""Recipes: every shipped recipe validates; errors list every problem with file:line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgeprune_cli.config import BaseDims, key_lines, load_recipe
from bgeprune_cli.errors import RecipeError
from bgeprune_cli.models.builtins import BGE_M3_CONFIG

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))
BGE_M3 = BaseDims.from_config(BGE_M3_CONFIG)
TINY = BaseDims(layers=3, heads=4, ffn=128, hidden=64)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def problems(path, dims=TINY, sets=None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, sets, base_dims=lambda recipe: dims)
    return info.value.problems


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(recipe):
    from bgeprune_cli.models.loading import recipe_base_dims

    # bge-m3 cannot be fetched offline; its config is kept as data (tiny.BGE_M3_CONFIG).
    def dims(r):
        return BGE_M3 if r.base.model == "BAAI/bge-m3" else recipe_base_dims(r)

    load_recipe(recipe, base_dims=dims)
    first = recipe.read_text().splitlines()[0]
    assert first.startswith(("# bgeprune ", "# torchrun ")), "a recipe's header comment is the command that runs it"
    assert recipe.name in first


def test_50pct_is_about_half_of_bge_m3_encoder():
    from bgeprune_cli.pruning.masks import Layout, full_layout

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "50pct.toml", base_dims=lambda r: BGE_M3).recipe
    t = recipe.target
    layout = Layout(list(range(t.layers)), [list(range(t.heads))] * t.layers, [list(range(t.ffn))] * t.layers,
                    list(range(t.hidden)), 64, {})
    ratio = layout.encoder_params() / full_layout(BGE_M3).encoder_params()
    assert 0.45 <= ratio <= 0.55 and layout.stock


def test_malformed_toml_names_the_line(tmp_path):
    found = problems(write(tmp_path, '[base]\nmodel = "x"\n[target\nlayers = 2\n'))
    assert len(found) == 1 and found[0].startswith(f"{tmp_path / 'r.toml'}:3: toml:")


def test_all_problems_at_once_with_lines_and_keys(tmp_path):
    path = write(tmp_path, '[base]\nmodel = "builtin:tiny-xlm-roberta"\nmodle = 1\n\n[target]\nlayers = "two"\n'
                           '\n[train]\nsteps = 0\nbatch_sise = 4\n')
    found = problems(path)
    assert f"{path}:3: base.modle: unknown key" in "\n".join(found)
    assert any(p.startswith(f"{path}:6: target.layers:") for p in found)
    assert any(p.startswith(f"{path}:9: train.steps:") for p in found)
    assert any(p.startswith(f"{path}:10: train.batch_sise: unknown key") for p in found)
    assert len(found) == 4


@pytest.mark.parametrize("target,key,message", [
    ("heads = 5\nhidden = 80", "target.heads", "more than the base model has (4)"),
    ("heads = 2", "target.heads", "Nearest valid: heads=1 with hidden=16, heads=2 with hidden=32"),
    ("heads = 2\nhidden = 48", "target.hidden", "not a stock shape"),
    ("layers = 0", "target.layers", "must be at least 1"),
    ("layers = 3", "target", "nothing would be pruned"),
    ("layers = 2\nsparsity = 0.5", "target.sparsity", "only used with mode = \"sparsity\""),
    ('mode = "sparsity"\nlayers = 2', "target.layers", "only used with mode = \"targeted\""),
    ('mode = "sparsity"', "target.sparsity", "needs 0 < sparsity < 1"),
])
def test_infeasible_targets(tmp_path, target, key, message):
    path = write(tmp_path, f'[base]\nmodel = "builtin:tiny-xlm-roberta"\n\n[target]\n{target}\n')
    found = problems(path)
    assert any(f": {key}: " in p and message in p for p in found), found


def test_bge_m3_hidden_must_match_heads(tmp_path):
    path = write(tmp_path, '[base]\nmodel = "BAAI/bge-m3"\n[target]\nheads = 12\nhidden = 700\n')
    (found,) = problems(path, BGE_M3)
    assert "hidden = 64*heads" in found and "heads=11 with hidden=704" in found and "heads=12 with hidden=768" in found


def test_set_overrides_and_reports_bad_overrides(tmp_path):
    path = write(tmp_path, '[base]\nmodel = "builtin:tiny-xlm-roberta"\n[target]\nlayers = 2\n')
    loaded = load_recipe(path, ["target.layers=1", "train.seed=7", "export.name=my model"], base_dims=lambda r: TINY)
    assert loaded.recipe.target.layers == 1 and loaded.recipe.train.seed == 7
    assert loaded.recipe.export.name == "my model"
    assert problems(path, sets=["target.layerz=1"]) == ["--set: target.layerz: unknown key; did you mean "
                                                         "target.layers?"]
    assert "expected dotted.key=value" in problems(path, sets=["target.layers"])[0]


def test_relative_paths_resolve_against_the_recipe(tmp_path):
    (tmp_path / "data.txt").write_text("x\n")
    path = write(tmp_path, '[base]\nmodel = "builtin:tiny-bert"\n[target]\nlayers = 2\n[data]\ntrain = ["data.txt"]\n')
    loaded = load_recipe(path, base_dims=lambda r: TINY)
    assert loaded.resolved["data"]["train"] == [str(tmp_path / "data.txt")]
    assert loaded.run_dir() == Path("runs/r")


def test_key_lines_handles_tables_and_dotted_keys():
    lines = key_lines('# c\n[a]\nx = 1\n"y" = [\n 1,\n]\n[b.c]\nz.w = 2\n')
    assert lines == {"a": 2, "a.x": 3, "a.y": 4, "b.c": 7, "b.c.z.w": 8}


# ---------------------------------------------------------------- hints in recipe errors

SMOKE_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.toml"


def _problems(sets: list[str], path: Path = SMOKE_RECIPE) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, sets)
    return caught.value.problems


@pytest.mark.parametrize("key, suggestion", [("train.step", "train.steps"), ("distill.cosin", "distill.cosine"),
                                             ("data.max_lenght", "data.max_length")])
def test_a_misspelt_key_names_the_nearest_valid_one(key, suggestion):
    assert _problems([f"{key}=1"]) == [f"--set: {key}: unknown key; did you mean {suggestion}?"]


def test_a_key_nothing_like_any_other_keeps_the_general_advice():
    assert "see recipes/ for the schema" in _problems(["train.zzzzzz=1"])[0]


@pytest.mark.parametrize("item, hint", [
    ("train.steps=true", "expected an integer, e.g. --set train.steps='10'"),
    ("data.train=a.txt", "expected a list of strings, e.g. --set data.train='[\"data.txt\"]'"),
    ("train.lr_weights=fast", "expected a number, e.g. --set train.lr_weights='0.5'"),
    ("train.freeze_embeddings=1", "expected true or false, e.g. --set train.freeze_embeddings='true'"),
])
def test_a_wrong_type_from_set_says_what_is_wanted_with_an_example(item, hint):
    (problem,) = _problems([item])
    assert problem.startswith(f"--set: {item.split('=')[0]}: ") and problem.endswith(hint)


def test_a_wrong_type_in_the_file_gets_a_toml_example(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(SMOKE_RECIPE.read_text().replace('train = ["builtin:probe"]', 'train = "corpus.txt"'))
    (problem,) = _problems([], path)
    assert problem.startswith(f"{path}:") and problem.endswith("e.g. train = [\"data.txt\"]")
