"""`bgeprune magnitude`: training-free gate scores, a baseline and a way to run the pipeline now.

Heads and FFN units are ranked by weight magnitude (the norms of the rows and columns they own),
hidden dims by mean activation magnitude and layers by block influence (1 - cos(input, output))
on the probe text. Writes a `train-run` artifact whose `gates.safetensors` holds these scores;
`finalize-masks` ranks by them exactly as it ranks learned log_alpha. Targeted recipes only: a
sparsity recipe needs per-layer counts that only training learns. A recipe that only trims the
vocabulary has nothing to score: its train-run holds no scores, and finalize-masks chooses the tokens.

Example:
    bgeprune magnitude recipes/smoke.toml
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..artifacts import ensure_writable, write_artifact
from ..config import LoadedRecipe, targeted_masks
from ..errors import UsageError
from ..filenames import GATES
from ..locks import RUN_LOCK, exclusive, recover_output
from ..models.loading import load_model, load_tokenizer
from ..models.probe import probe_batches, probe_texts
from ..models.recipe_base import RecipeBase
from ..pruning.importance import importance_scores
from ..training.vocab_corpus import preflight
from ..ui import step


def run(recipe: LoadedRecipe, *, run_dir: Path | None = None, force: bool = False) -> dict:
    run_dir = Path(run_dir or recipe.run_dir())
    with exclusive(run_dir / RUN_LOCK, str(run_dir)):  # the same lock as `train`: both write RUN/train
        recover_output(run_dir / "train")
        return _score(recipe, run_dir / "train", force)


def _score(recipe: LoadedRecipe, out: Path, force: bool) -> dict:
    ensure_writable(out, force, "train-run")
    if recipe.recipe.target.mode != "targeted":
        raise UsageError("magnitude scoring needs a targeted recipe (target.mode = \"targeted\"); sparsity mode "
                         "learns per-layer counts, which only 'bgeprune train' can do.")
    ctx = RecipeBase(recipe.recipe)
    wanted = targeted_masks(recipe.recipe.target, ctx.dims)
    preflight(recipe.recipe, ctx.base_dir, ctx.base_config, recipe.where)  # [vocab]: keep tokens, corpus files
    scores: dict[str, torch.Tensor] = {}
    if wanted:
        with step(f"loading base model {recipe.recipe.base.model}"):
            model = load_model(ctx.base_dir)
            tokenizer = load_tokenizer(ctx.base_dir)
        with step("scoring " + ", ".join(wanted)):
            batches = probe_batches(tokenizer, probe_texts(), max_length=recipe.recipe.data.max_length)
            scores = importance_scores(model, ctx.adapter, ctx.dims, wanted, batches)
    info = {"method": "magnitude" if wanted else "vocab-only", "gate_kind": "score", "masks": wanted, "steps": 0,
            "base_dims": asdict(ctx.dims)}
    with write_artifact(out, "train-run", force=force, recipe=recipe.resolved, recipe_sha256=recipe.sha256,
                        info=info) as tmp:
        save_file(scores, str(tmp / GATES), metadata={"format": "pt"})
    return {"artifact": str(out), "kind": "train-run", **info}
