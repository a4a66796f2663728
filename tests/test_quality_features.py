"""What quality work relies on: a base's prompts reach training and bench, the index-compatibility
(asymmetric) metric, and the training levers (token-level distillation, importance initialisation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bgeprune_cli.bench.eval_data import BeirSet
from bgeprune_cli.bench.quality import asymmetric_scores, evaluate, ir_evaluator, ir_metrics
from bgeprune_cli.models.loading import load_tokenizer, resolve_base
from bgeprune_cli.models.m3 import M3Output
from bgeprune_cli.models.st_files import Prompts, read_prompts

E5_PROMPTS = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
              "similarity_fn_name": "cosine"}


@pytest.fixture()
def prompted_base(tmp_path, builtin_cache) -> Path:
    """tiny BERT with multilingual-e5's prompts in its sentence-transformers config."""
    base = tmp_path / "base"
    shutil.copytree(resolve_base("builtin:tiny-bert"), base)
    (base / "config_sentence_transformers.json").write_text(json.dumps(E5_PROMPTS))
    return base


def test_prompts_are_read_with_their_usual_names(tmp_path):
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"search_query": "q> ", "search_document": "d> "}}))
    assert read_prompts(tmp_path) == Prompts("q> ", "d> ")
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"all": "x: "}, "default_prompt_name": "all"}))
    assert read_prompts(tmp_path) == Prompts("x: ", "x: ")
    assert Prompts("query: ", "passage: ").queries(["a"]) == ["query: a"]


def test_training_texts_get_the_base_passage_prompt(prompted_base, tmp_path, monkeypatch):
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.stages import train
    from bgeprune_cli.training.trainer import Trainer

    seen: list[str] = []
    real_step = Trainer.step

    def record(self, step, micro_batches, interrupt=False):
        seen.extend(t for m in micro_batches for t in m.texts)
        return real_step(self, step, micro_batches, interrupt)

    monkeypatch.setattr(Trainer, "step", record)
    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "smoke.toml",
                         [f"base.model={json.dumps(str(prompted_base))}", "target.hidden=32", "target.heads=2",
                          "target.ffn=48", "train.steps=2", "train.recovery_steps=0", "train.target_warmup_steps=1"])
    train.run(recipe, tmp_path / "run")
    assert seen and all(t.startswith("passage: ") for t in seen)


class _Recorder:
    """A BenchModel stand-in that records the texts it is asked to encode (dense vectors from a real model)."""

    def __init__(self, directory: Path, hidden: int = 64):
        from bgeprune_cli.bench.models import load_bench_model

        self.real = load_bench_model(str(directory))
        self.prompts, self.pooling, self.heads, self.hidden = self.real.prompts, self.real.pooling, None, hidden
        self.texts: list[str] = []

    def encode(self, texts, max_length, batch_size, with_heads, progress=None):
        self.texts += texts
        return self.real.encode(texts, max_length, batch_size, with_heads, progress)


def test_bench_encodes_queries_and_documents_with_each_models_prompts(prompted_base):
    beir = BeirSet("mini", {"q1": "what is pruning"}, {"d1": "pruning removes weights", "d2": "cats"}, {"q1": {"d1"}})
    model = _Recorder(prompted_base)
    result = evaluate({"model": model}, [beir], [], [], 64, 8)
    assert model.texts == ["query: what is pruning", "passage: pruning removes weights", "passage: cats"]
    assert result["beir"]["mini"]["modes"]["dense"]["model"]["ndcg@10"] >= 0


def _outputs(rows: list[list[float]]) -> M3Output:
    dense = torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)
    return M3Output(dense, [{} for _ in rows], [])


def test_asymmetric_quality_on_a_hand_made_three_query_example():
    """Three queries and three documents, each query relevant to the document with the same index. The
    base's vectors make every query find its document. The pruned model's documents are the base's, so
    its queries must be ranked against the base's index: two of its three queries point at the right
    document, one (q3) at d1, which gives a known nDCG@10 for "pruned queries × base index"."""
    base_q = _outputs([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    base_d = _outputs([[1, 0.1, 0], [0, 1, 0.1], [0.1, 0, 1]])
    model_q = _outputs([[1, 0, 0], [0, 1, 0], [1, 0, 0.2]])  # q3 drifted towards d1
    model_d = _outputs([[1, 0.1, 0], [0, 1, 0.1], [0.1, 0, 1]])
    scores = asymmetric_scores((model_q, model_d), (base_q, base_d))
    assert scores["model_queries_base_docs"].argmax(1).tolist() == [0, 1, 0]
    assert scores["base_queries_model_docs"].argmax(1).tolist() == [0, 1, 2]
    beir = BeirSet("hand", {f"q{i}": f"q{i}" for i in range(3)}, {f"d{i}": f"d{i}" for i in range(3)},
                   {f"q{i}": {f"d{i}"} for i in range(3)})
    evaluator = ir_evaluator(beir)
    metrics = ir_metrics(evaluator, scores["model_queries_base_docs"])
    # q3's document is ranked second of three: 1/log2(3) for it, 1 for the two others.
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 + 1 / torch.log2(torch.tensor(3.0)).item()) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert ir_metrics(evaluator, scores["base_queries_model_docs"])["ndcg@10"] == pytest.approx(1.0)


def test_bench_reports_asymmetric_quality_only_when_the_widths_match(prompted_base):
    beir = BeirSet("mini", {"q1": "what is pruning", "q2": "animals"},
                   {"d1": "pruning removes weights", "d2": "cats and dogs"}, {"q1": {"d1"}, "q2": {"d2"}})
    same = evaluate({"model": _Recorder(prompted_base), "base": _Recorder(prompted_base)}, [beir], [], ["x", "y", "z"],
                    64, 8)
    entry = same["beir"]["mini"]["asymmetric"]
    assert entry["model_queries_base_docs"]["ratio"]["ndcg@10"] == pytest.approx(1.0)  # the same model twice
    narrower = _Recorder(prompted_base, hidden=32)
    other = evaluate({"model": narrower, "base": _Recorder(prompted_base)}, [beir], [], ["x", "y", "z"], 64, 8)
    assert "asymmetric" not in other["beir"]["mini"] and "output dimension differs" in other["asymmetric_note"]


# ---------------------------------------------------------------- training levers


def test_token_loss_is_zero_for_the_teacher_itself_and_trains_weights_and_gates(tmp_path, builtin_cache):
    """The per-token term: 0 when student and teacher are the same model and masks keep everything; with
    sampled gates its gradient reaches the student's weights and the gates' log_alpha."""
    from bgeprune_cli.config import BaseDims, DistillSection
    from bgeprune_cli.models.families import adapter_for
    from bgeprune_cli.models.loading import load_model, read_config
    from bgeprune_cli.models.st_files import read_pooling
    from bgeprune_cli.pruning.hooks import MaskHooks
    from bgeprune_cli.training.distill_model import DistillModel, MicroBatch, Teacher
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
    targets = Teacher(teacher, None, pooling, distill, torch.device("cpu"), want_tokens=True).outputs(
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
    result = train.run(recipe, tmp_path / "run", teacher_cache=tmp_path / "cache")
    terms = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["terms"]
    assert terms["tokens"] > 0 and result["teacher_cache"]["misses"] > 0
    from safetensors.torch import load_file

    gates = load_file(str(tmp_path / "run" / "train" / "gates.safetensors"))
    assert gates["ffn"].std() > 0.3  # spread by importance, not all at gate_init


def test_frozen_embeddings_keep_the_base_table_while_the_rest_trains(tmp_path, builtin_cache):
    from safetensors.torch import load_file

    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import load_model, recipe_base_dims
    from bgeprune_cli.pruning.sources import RunContext
    from bgeprune_cli.stages import train

    def run(freeze: bool):
        recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "smoke.toml",
                             ["train.steps=2", "train.recovery_steps=1", "train.target_warmup_steps=1",
                              "train.lr_weights=1e-3", f"train.freeze_embeddings={str(freeze).lower()}"],
                             base_dims=recipe_base_dims)
        train.run(recipe, tmp_path / str(freeze))
        return load_file(str(tmp_path / str(freeze) / "train" / "student.safetensors")), recipe

    frozen, recipe = run(True)
    trained, _ = run(False)
    base = load_model(RunContext(recipe.recipe).base_dir).state_dict()
    table = "embeddings.word_embeddings.weight"
    assert torch.equal(frozen[table], base[table]) and not torch.equal(trained[table], base[table])
    moved = [k for k in base if k != table and not torch.equal(frozen[k], base[k])]
    assert "encoder.layer.0.attention.self.query.weight" in moved and "embeddings.LayerNorm.weight" in moved
