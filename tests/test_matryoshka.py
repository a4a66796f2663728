"""Matryoshka output widths (`distill.matryoshka_dims`): the loss's values and gradients, the recipe's
rules with their file:line errors, and a training run that uses them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.config import DistillSection, load_recipe
from bgeprune_cli.errors import RecipeError
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import train
from bgeprune_cli.training.losses import cross_lingual_kl, matryoshka_loss, similarity_kl
from conftest import SHORT_TRAIN

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.toml"
KEEP_HIDDEN = ["target.hidden=64", "target.heads=4"]  # the tiny base's width: a prefix is known while training


def recipe_with(tmp_path: Path, distill_lines: str, *sets: str):
    path = tmp_path / "recipe.toml"
    path.write_text(SMOKE.read_text() + "\n[distill]\n" + distill_lines + "\n")
    return load_recipe(path, [*SHORT_TRAIN, *sets], base_dims=recipe_base_dims)


# ---------------------------------------------------------------- the loss


def test_a_prefix_term_matches_a_hand_computed_case():
    # Teacher: three orthogonal texts, so each row's target is uniform over the other two.
    teacher = torch.eye(3)
    # Student's 2-dim prefixes: texts 0 and 1 coincide, text 2 is orthogonal to both. Its last dims differ,
    # so only the prefix can produce these similarities.
    student = torch.tensor([[1.0, 0.0, 5.0, 0.0], [1.0, 0.0, 0.0, 5.0], [0.0, 1.0, 5.0, 5.0]])
    t = 0.5
    # Rows 0 and 1: student softmax over (cos 1, cos 0) / t = (e², 1) / (e² + 1); row 2: (0, 0) -> uniform.
    q = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    row = 0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1])
    expected = (row + row + 0.0) / 3
    assert matryoshka_loss(student, teacher, [(2, 0.5)], t).item() == pytest.approx(0.5 * expected, rel=1e-5)
    assert matryoshka_loss(student, teacher, [(2, 0.5)], t, similarity_weight=2.0).item() == pytest.approx(
        expected, rel=1e-5)


def test_the_teacher_is_never_truncated_and_each_width_adds_its_weighted_term():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    got = matryoshka_loss(student, teacher, [(4, 1.0), (2, 0.25)], 0.05)
    want = similarity_kl(student[:, :4], teacher, 0.05) + 0.25 * similarity_kl(student[:, :2], teacher, 0.05)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # A prefix that already has the teacher's geometry scores zero: the teacher in the first 4 dims.
    padded = torch.cat([teacher[:, :4], torch.randn(6, 4, generator=g)], dim=1)
    assert matryoshka_loss(padded, teacher[:, :4], [(4, 1.0)], 0.05).abs() < 1e-6


def test_translation_pairs_add_their_cross_lingual_term_per_prefix():
    g = torch.Generator().manual_seed(1)
    student, teacher, sources, targets, teacher_sources = (torch.randn(5, 8, generator=g) for _ in range(5))
    got = matryoshka_loss(student, teacher, [(3, 2.0)], 0.1, 1.0, (sources, targets, teacher_sources), 0.5)
    want = 2.0 * (similarity_kl(student[:, :3], teacher, 0.1)
                  + 0.5 * cross_lingual_kl(sources[:, :3], targets[:, :3], teacher_sources, 0.1))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_only_widths_below_the_full_width_are_prefixes():
    distill = DistillSection(matryoshka_dims=[64, 32, 16], matryoshka_weights=[1.0, 0.5, 0.0])
    assert distill.matryoshka_prefixes(64) == [(32, 0.5)]  # 64 is the existing terms; weight 0 is off
    assert DistillSection().matryoshka_prefixes(64) == []


def test_term_trains_weights_and_gates_and_the_full_width_terms_are_zero_for_the_teacher(builtin_cache):
    from bgeprune_cli.config import BaseDims
    from bgeprune_cli.models.families import adapter_for
    from bgeprune_cli.models.loading import load_model, load_tokenizer, read_config, resolve_base
    from bgeprune_cli.models.st_files import read_pooling
    from bgeprune_cli.pruning.hooks import MaskHooks
    from bgeprune_cli.training.distill_model import DistillModel, MicroBatch, Teacher, TeacherNeeds
    from bgeprune_cli.training.gates import MaskSet

    directory = resolve_base("builtin:tiny-bert")
    dims = BaseDims.from_config(read_config(directory))
    student, teacher = load_model(directory), load_model(directory).requires_grad_(False)
    pooling, tokenizer = read_pooling(directory), load_tokenizer(directory)
    masks = MaskSet(dims, ["heads", "ffn"], 3.0)
    hooks = MaskHooks(student, adapter_for("bert"), {}, dims.head_dim)
    distill = DistillSection(matryoshka_dims=[dims.hidden, dims.hidden // 4])
    model = DistillModel(student, masks, None, None, hooks, pooling, distill, True, torch.device("cpu"))
    texts = ["the file was saved", "open the door", "a new message", "the server stopped", "print the page"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    expected = Teacher(teacher, None, pooling, TeacherNeeds(), torch.device("cpu")).outputs(MicroBatch(batch, texts))

    keep_all = {name: torch.ones_like(a) for name, a in masks.log_alpha.items()}
    with torch.no_grad():
        terms = model(batch, expected, None, keep_all, None)
    assert terms["cosine"].abs() < 1e-5 and terms["similarity_kl"].abs() < 1e-5
    assert terms["matryoshka"] > 0  # the teacher's own quarter-width prefix does not hold its geometry

    terms = model(batch, expected, masks.noise(torch.Generator().manual_seed(0)), None, None)
    terms["matryoshka"].backward()
    assert student.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in masks.log_alpha.values())


# ---------------------------------------------------------------- the recipe


@pytest.mark.parametrize("lines, sets, message", [
    ("matryoshka_dims = [16, 32]", KEEP_HIDDEN, r"widest first, each once; got \[16, 32\] \(try \[32, 16\]\)"),
    ("matryoshka_dims = [32, 32]", KEEP_HIDDEN, "widest first, each once"),
    ("matryoshka_dims = []", KEEP_HIDDEN, "name at least one width"),
    ("matryoshka_dims = [32, 0]", KEEP_HIDDEN, "at least 1"),
    ("matryoshka_dims = [128, 32]", KEEP_HIDDEN, r"\[128\] wider than the student's 64-dim output"),
    ("matryoshka_dims = [32, 16]\nmatryoshka_weights = [1.0]", KEEP_HIDDEN, "1 weight.s. for 2 width.s."),
    ("matryoshka_weights = [1.0]", KEEP_HIDDEN, "set without distill.matryoshka_dims"),
    ("matryoshka_dims = [64, 16]\nmatryoshka_weights = [2.0, 1.0]", KEEP_HIDDEN, "give it weight 1.0"),
    ("matryoshka_dims = [32, 16]", [], "cannot be trained while hidden is pruned"),
])
def test_bad_widths_are_named_with_their_line(tmp_path, lines, sets, message):
    with pytest.raises(RecipeError, match=r"recipe\.toml:\d+: distill\.matryoshka_\w+: .*" + message):
        recipe_with(tmp_path, lines, *sets)


def test_a_recipe_without_widths_resolves_and_hashes_as_before(tmp_path):
    plain = load_recipe(SMOKE, SHORT_TRAIN, base_dims=recipe_base_dims)
    assert "matryoshka_dims" not in plain.resolved["distill"]
    widths = recipe_with(tmp_path, "matryoshka_dims = [64, 32, 16]", *KEEP_HIDDEN)
    assert widths.resolved["distill"]["matryoshka_dims"] == [64, 32, 16]
    assert widths.sha256 != load_recipe(tmp_path / "recipe.toml", [*SHORT_TRAIN, *KEEP_HIDDEN,
                                                                    "distill.matryoshka_dims=[64, 32]"],
                                        base_dims=recipe_base_dims).sha256


# ---------------------------------------------------------------- training with them


def test_training_records_the_term_and_a_bad_width_exits_2_writing_nothing(tmp_path):
    loaded = recipe_with(tmp_path, "matryoshka_dims = [64, 32, 16]", *KEEP_HIDDEN)
    result = train.run(loaded, run_dir=tmp_path / "run", device="cpu")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result["bad_steps"] == 0
    assert all(math.isfinite(r["terms"]["matryoshka"]) and r["terms"]["matryoshka"] > 0 for r in records)

    bad = CliRunner().invoke(app, ["train", str(tmp_path / "recipe.toml"), "--run-dir", str(tmp_path / "bad"),
                                   *[w for s in [*SHORT_TRAIN, *KEEP_HIDDEN, "distill.matryoshka_dims=[16, 32]"]
                                     for w in ("--set", s)]])
    assert bad.exit_code == 2, bad.output
    assert "distill.matryoshka_dims" in bad.output and not (tmp_path / "bad").exists()

