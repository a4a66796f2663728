"""The training levers: token-level distillation, importance initialisation of the gates, the frozen
word-embedding table."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bgeprune_cli.models.loading import load_tokenizer, resolve_base


def test_token_loss_is_zero_for_the_teacher_itself_and_trains_weights_and_gates(tmp_path, builtin_cache):
    """The per-token term: 0 when student and teacher are the same model and masks keep everything; with
    sampled gates its gradient reaches the student's weights and the gates' log_alpha."""
    from bgeprune_cli.config import BaseDims, DistillSection
    from bgeprune_cli.models.families import adapter_for
    from bgeprune_cli.models.loading import load_model, read_config
    from bgeprune_cli.models.st_files import read_pooling
    from bgeprune_cli.pruning.hooks import MaskHooks
    from bgeprune_cli.training.distill_model import DistillModel, MicroBatch, Teacher, TeacherNeeds
    from bgeprune_cli.training.gates import MaskSet

    directory = resolve_base("builtin:tiny-bert")
    dims = BaseDims.from_config(read_config(directory))
    student, teacher = load_model(directory), load_model(directory).requires_grad_(False)
    pooling, tokenizer = read_pooling(directory), load_tokenizer(directory)
    distill = DistillSection(cosine=0, similarity_kl=0, tokens=1.0)
    batch = dict(tokenizer(["a pruned model", "the teacher and the student", "x"], padding=True,
                           return_tensors="pt"))
    masks = MaskSet(dims, ["heads", "ffn"], 3.0)
    hooks = MaskHooks(student, adapter_for("bert"), {}, dims.head_dim)
    model = DistillModel(student, masks, None, None, hooks, pooling, distill, False, torch.device("cpu"))
    targets = Teacher(teacher, None, pooling, TeacherNeeds(tokens=True), torch.device("cpu")).outputs(
        MicroBatch(batch, ["a", "b", "c"]))
    keep_all = {name: torch.ones_like(a) for name, a in masks.log_alpha.items()}
    with torch.no_grad():
        assert model(batch, targets, None, keep_all, None)["tokens"].abs() < 1e-6
    terms = model(batch, targets, masks.noise(torch.Generator().manual_seed(0)), None, None)
    assert terms["tokens"] > 0
    terms["tokens"].backward()
    assert student.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in masks.log_alpha.values())


def test_importance_initialisation_orders_log_alpha_as_the_scores():
    from bgeprune_cli.pruning.importance import log_alpha_from_importance

    scores = torch.tensor([[0.3, 0.9, 0.1, 0.5], [2.0, 1.0, 1.0, 0.0]])
    log_alpha = log_alpha_from_importance(scores, init=3.0, spread=1.0)
    for row_scores, row in zip(scores, log_alpha):
        assert torch.equal(row.argsort(stable=True), row_scores.argsort(stable=True))
    assert log_alpha.min() == 2.0 and log_alpha.max() == 4.0
    assert log_alpha[1, 1] < log_alpha[1, 2]  # a tie goes to the lower index, as finalize breaks ties
    assert torch.equal(log_alpha_from_importance(torch.tensor([5.0, 1.0]), 3.0, 0.0), torch.full((2,), 3.0))


def test_training_with_importance_init_and_token_distillation_runs_and_uses_the_scores(tmp_path, builtin_cache):
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import recipe_base_dims
    from bgeprune_cli.stages import train

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "smoke.toml",
                         ["target.hidden=64", "target.heads=4", "train.steps=1", "train.recovery_steps=1",
                          "train.target_warmup_steps=1", "train.importance_init=1.0", "distill.tokens=1.0"],
                         base_dims=recipe_base_dims)
    result = train.run(recipe, run_dir=tmp_path / "run", teacher_cache=tmp_path / "cache")
    terms = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["terms"]
    assert terms["tokens"] > 0 and result["teacher_cache"]["misses"] > 0
    from safetensors.torch import load_file

    gates = load_file(str(tmp_path / "run" / "train" / "gates.safetensors"))
    assert gates["ffn"].std() > 0.3  # spread by importance, not all at gate_init


def test_frozen_embeddings_keep_the_base_table_while_the_rest_trains(tmp_path, builtin_cache):
    from safetensors.torch import load_file

    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import load_model, recipe_base_dims
    from bgeprune_cli.models.recipe_base import RecipeBase
    from bgeprune_cli.stages import train

    def run(freeze: bool):
        recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "smoke.toml",
                             ["train.steps=2", "train.recovery_steps=1", "train.target_warmup_steps=1",
                              "train.lr_weights=1e-3", f"train.freeze_embeddings={str(freeze).lower()}"],
                             base_dims=recipe_base_dims)
        train.run(recipe, run_dir=tmp_path / str(freeze))
        return load_file(str(tmp_path / str(freeze) / "train" / "student.safetensors")), recipe

    frozen, recipe = run(True)
    trained, _ = run(False)
    base = load_model(RecipeBase(recipe.recipe).base_dir).state_dict()
    table = "embeddings.word_embeddings.weight"
    assert torch.equal(frozen[table], base[table]) and not torch.equal(trained[table], base[table])
    moved = [k for k in base if k != table and not torch.equal(frozen[k], base[k])]
    assert "encoder.layer.0.attention.self.query.weight" in moved and "embeddings.LayerNorm.weight" in moved
