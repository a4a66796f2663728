"""`bgeprune check`: validate a recipe against its base without loading weights; with `[vocab]`, a dry run.

The schema, every cross-field rule and the target's feasibility against the base's config.json are
checked by `config.load_recipe` (cli.py does it for every recipe command). Then every data source is
checked to be readable here (`training/data_sources.py`: local paths exist, streamed datasets open and
give a first record), all problems reported at once. With a `[vocab]` section
this also tokenizes the corpus with the base tokenizer (with a progress bar) and reports the tokens
that would be kept and the parameter count before and after, so a corpus that keeps nothing, a
`keep` token the vocabulary lacks or a tokenizer trimming cannot rewrite shows up before any run.

Example:
    bgeprune check recipes/vocab-smoke.toml
"""

from __future__ import annotations

from dataclasses import asdict

from ..config import LoadedRecipe
from ..models.card import count_base_params
from ..models.recipe_base import RecipeBase
from ..pruning.slicing import stock_config
from ..training.data_sources import data_sources, raise_unreachable
from ..training.vocab_corpus import plan_vocabulary


def run(loaded: LoadedRecipe) -> dict:
    recipe = loaded.recipe
    sources = data_sources(recipe)
    raise_unreachable(sources)
    result = {"recipe": str(loaded.path), "sha256": loaded.sha256, "run_dir": str(loaded.run_dir()),
              "resolved": loaded.resolved, "data": [row.as_dict() for row in sources]}
    if recipe.vocab is None:
        return result
    ctx = RecipeBase(recipe)
    plan = plan_vocabulary(recipe, ctx.base_dir, ctx.base_config, loaded.where)
    dims, target = ctx.dims, recipe.target
    # Targeted mode names the architecture, so its parameters are known now; sparsity mode learns it.
    targeted = target.mode == "targeted"
    sizes = {"layers": (targeted and target.layers) or dims.layers, "heads": (targeted and target.heads) or dims.heads,
             "ffn": (targeted and target.ffn) or dims.ffn, "hidden": (targeted and target.hidden) or dims.hidden}
    base_params = count_base_params(ctx.base_config)
    params = count_base_params(stock_config(ctx.base_config, ctx.adapter, sizes, plan.kept))
    vocab_only = count_base_params(stock_config(ctx.base_config, ctx.adapter, asdict(dims), plan.kept))
    result["vocab"] = plan.summary(ctx.base_config.get("vocab_size", len(plan.files)), sizes["hidden"], dims.hidden)
    result["params"] = {"base": base_params, "after": params, "vocab_trimming_alone": vocab_only,
                        "encoder_counted": targeted}
    return result
