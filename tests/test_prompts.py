"""The base's prompts (config_sentence_transformers.json) reach training and bench, as the base's
users apply them."""

from __future__ import annotations

import json
from pathlib import Path

from bgeprune_cli.bench.eval_data import BeirSet
from bgeprune_cli.bench.quality import evaluate
from bgeprune_cli.models.st_files import Prompts, read_prompts
from conftest import Recorder


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
    train.run(recipe, run_dir=tmp_path / "run")
    assert seen and all(t.startswith("passage: ") for t in seen)


def test_bench_encodes_queries_and_documents_with_each_models_prompts(prompted_base):
    beir = BeirSet("mini", {"q1": "what is pruning"}, {"d1": "pruning removes weights", "d2": "cats"}, {"q1": {"d1"}})
    model = Recorder(prompted_base)
    result = evaluate({"model": model}, [beir], [], [], 64, 8)
    assert model.texts == ["query: what is pruning", "passage: pruning removes weights", "passage: cats"]
    assert result["beir"]["mini"]["modes"]["dense"]["model"]["ndcg@10"] >= 0
