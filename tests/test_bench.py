"""`bgeprune bench`: metric code against hand-computed values, the timing and FLOPs arithmetic, the
report's schema and picture, loading every kind of model, and bad input with its exit code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bgeprune_cli.artifacts import read_artifact
from bgeprune_cli.bench.eval_data import load_beir, load_bitext
from bgeprune_cli.bench.models import load_bench_model
from bgeprune_cli.bench.multilingual import retrieval_metrics, worst_language
from bgeprune_cli.bench.quality import bitext_accuracy, ir_evaluator, ir_metrics
from bgeprune_cli.bench.size import flops_per_token
from bgeprune_cli.bench.speed import latency_stats, make_batch, measure_grid
from bgeprune_cli.cli import app
from bgeprune_cli.errors import DataError
from bgeprune_cli.models import m3
from bgeprune_cli.stages import export_hf, prune
from conftest import bool_mask, make_run

BASE = "builtin:tiny-bge-m3"
runner = CliRunner()


def bench(*args) -> object:
    return runner.invoke(app, ["bench", *map(str, args)])


def _write_beir(root: Path, qrels: str | None = None, queries: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = {"d1": "The cat sat on the mat.", "d2": "Dogs bark at night.", "d3": "Python is a language.",
            "d4": "Markets fell today."}
    queries = {"q1": "where did the cat sit", "q2": "which animal barks", "q3": "what is python"} \
        if queries is None else queries
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in docs.items()))
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in queries.items()))
    (root / "qrels.tsv").write_text(qrels or "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq3\td4\t1\n")
    return root


@pytest.fixture(scope="module")
def export(tmp_path_factory, builtin_cache) -> Path:
    """A tiny bge-m3 export with the middle layer dropped (bgeprune lineage, so a kept-layers picture)."""
    tmp = tmp_path_factory.mktemp("bench")
    run = make_run(tmp / "run", BASE, {"layer": bool_mask(1, 0, 1)})
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp / "out")
    return tmp / "out"


# ---------------------------------------------------------------- metrics by hand


def test_ir_metrics_match_hand_computed_values(tmp_path):
    data = load_beir(_write_beir(tmp_path / "beir"))
    evaluator = ir_evaluator(data)
    assert evaluator.corpus_ids == ["d1", "d2", "d3", "d4"]
    # q1: its document first; q2: its document second; q3: relevant d3 and d4 at ranks 3 and 4
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.3],
                           [0.8, 0.7, 0.1, 0.0],
                           [0.9, 0.8, 0.5, 0.4]])
    got = ir_metrics(evaluator, scores)
    ideal_two = 1 + 1 / math.log2(3)
    ndcg = [1.0, 1 / math.log2(3), (1 / math.log2(4) + 1 / math.log2(5)) / ideal_two]
    assert got["ndcg@10"] == pytest.approx(sum(ndcg) / 3, abs=1e-9)
    assert got["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-9)
    assert got["recall@100"] == pytest.approx(1.0)


def test_ir_metrics_break_ties_by_corpus_id_like_the_evaluator(tmp_path):
    evaluator = ir_evaluator(load_beir(_write_beir(tmp_path / "beir")))
    tied = torch.full((3, 4), 0.5)  # all tied: ranking is d1, d2, d3, d4 for every query
    got = ir_metrics(evaluator, tied)
    assert got["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-9)


def test_bitext_accuracy_by_hand():
    english, other = ["a", "b", "c", "d"], ["A", "B", "C", "D"]
    scores = torch.eye(4)
    scores[1, 2] = 2.0  # b -> C is wrong; backward: C's best is b (2.0 > 1.0), also wrong
    got = bitext_accuracy(scores, english, other)
    assert got == {"en_to_xx": 0.75, "xx_to_en": 0.75, "accuracy": 0.75}
    same = bitext_accuracy(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), ["x", "y"], ["Z", "Z"])
    assert same["en_to_xx"] == 1.0  # a duplicate translation counts as found (as TranslationEvaluator does)


def test_cross_lingual_retrieval_by_hand():
    # Query 0 finds its document first; query 1 ranks it third (two documents score higher); query 2 ties
    # with a wrong document (a tie counts against it: rank 2); query 3's document repeats document 0's text.
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.2],
                           [0.8, 0.3, 0.5, 0.0],
                           [0.0, 0.7, 0.7, 0.1],
                           [0.6, 0.0, 0.0, 0.1]])
    got = retrieval_metrics(scores, ["a", "b", "c", "a"])
    ranks = [1, 3, 2, 1]
    assert got["accuracy"] == 0.5
    assert got["ndcg@10"] == pytest.approx(sum(1 / math.log2(1 + r) for r in ranks) / 4)
    far = torch.eye(12).flip(1)  # every query's own document last of twelve: beyond the cut-off
    assert retrieval_metrics(far, [str(i) for i in range(12)]) == {"ndcg@10": 0.0, "accuracy": 0.0}


def test_worst_language_names_the_language_and_the_worst_retention_separately():
    def lang(language, model, base):
        return {"language": language, "modes": {"dense": {"model": {"accuracy": model}, "base": {"accuracy": base},
                                                          "ratio": {"accuracy": model / base}}}}

    bitext = {"vi": lang("vi", 0.50, 0.60), "he": lang("he", 0.40, 0.41), "de": lang("de", 0.90, 0.95)}
    worst = worst_language(bitext, "dense", ["model", "base"])
    assert worst["model"] == {"accuracy": 0.40, "language": "he"} and worst["base"]["language"] == "he"
    assert worst["ratio"] == {"accuracy": pytest.approx(0.50 / 0.60), "language": "vi"}


def test_vectorised_m3_scores_equal_the_definition():
    torch.manual_seed(0)
    queries = [torch.nn.functional.normalize(torch.randn(n, 8), dim=-1) for n in (1, 3, 5)]
    passages = [torch.nn.functional.normalize(torch.randn(n, 8), dim=-1) for n in (2, 7, 1, 4)]
    by_definition = torch.tensor([[float((q @ p.T).max(-1).values.mean()) for p in passages] for q in queries])
    assert torch.allclose(m3.colbert_scores(queries, passages), by_definition, atol=1e-6)
    assert torch.allclose(m3.colbert_scores(queries, passages, chunk=3), by_definition, atol=1e-6)
    lexical_q, lexical_p = [{1: 0.5, 3: 0.2}, {}, {7: 1.0}], [{1: 2.0, 7: 0.1}, {3: 1.0, 1: 1.0}]
    assert torch.allclose(m3.sparse_scores(lexical_q, lexical_p), torch.tensor([[1.0, 0.7], [0, 0], [0.1, 0]]))


def test_flops_per_token_by_hand():
    layer = {"heads": 2, "head_dim": 4, "ffn": 16}
    # d=8, w=8: projections 2*4*8*8 = 512, FFN 2*2*8*16 = 512, attention 2*2*L*8 = 32*L
    assert flops_per_token([layer], 8, 10) == 512 + 512 + 320
    assert flops_per_token([layer] * 3, 8, 10) == 3 * 1344


def test_latency_stats_by_hand():
    stats = latency_stats([0.4, 0.1, 0.2, 0.3], batch=8, length=16)
    assert stats["median_ms"] == pytest.approx(250.0)
    assert stats["p90_ms"] == pytest.approx(370.0)  # 0.3 + 0.7 * (0.4 - 0.3)
    assert stats["sentences_per_s"] == pytest.approx(8 / 0.25)
    assert stats["tokens_per_s"] == pytest.approx(8 * 16 / 0.25)
    assert stats["cv"] == pytest.approx(0.1290994 / 0.25, rel=1e-5)


# ---------------------------------------------------------------- models and timing


def test_inputs_have_exactly_the_requested_length(builtin_cache):
    model = load_bench_model(BASE)
    for length in (2, 17, 64):
        batch = make_batch(model.tokenizer, 3, length, "cpu")
        assert batch["input_ids"].shape == (3, length) and bool(batch["attention_mask"].all())


def test_models_are_timed_interleaved_in_alternating_order(builtin_cache):
    models = {"model": load_bench_model("builtin:tiny-xlm-roberta"), "base": load_bench_model(BASE)}
    calls = []
    for name, m in models.items():
        m.model.register_forward_pre_hook(lambda *_, name=name: calls.append(name))
    points = measure_grid(models, [2], [8], warmup=1, repeats=4)
    assert calls == ["model", "base"] + ["model", "base", "base", "model"] * 2
    assert points[0]["model"]["samples"] == points[0]["base"]["samples"] == 4


def test_a_runs_pruned_model_equals_its_export(export, builtin_cache):
    from_run = load_bench_model(str(export.parent / "run"))
    from_export = load_bench_model(str(export))
    assert from_run.kind == "pruned-model" and from_export.kind == "hf-model"
    assert from_run.layout.layers == from_export.layout.layers == [0, 2]
    texts = ["a short text", "a somewhat longer text about pruning encoders"]
    a, b = (m.encode(texts, 64, 8, with_heads=True) for m in (from_run, from_export))
    assert torch.allclose(a.dense, b.dense, atol=1e-5)
    assert a.lexical[1].keys() == b.lexical[1].keys()
    assert from_run.arch == from_export.arch == [{"heads": 4, "head_dim": 16, "ffn": 128}] * 2


# ---------------------------------------------------------------- the command


def test_bench_report_schema_png_and_artifact(tmp_path, export):
    beir = _write_beir(tmp_path / "beir")
    bitext = tmp_path / "de.jsonl"
    bitext.write_text("\n".join(json.dumps({"en": e, "de": d}) for e, d in
                                [("hello", "hallo"), ("good morning", "guten Morgen"), ("thank you", "danke")]))
    out = tmp_path / "report"
    result = bench(export, "--compare", BASE, "--beir", beir, "--bitext", bitext, "--batch-sizes", "1,4",
                   "--seq-lengths", "8", "--repeats", "3", "--warmup", "1", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"command", "models", "environment", "options", "size_ratio", "speed", "headline",
                           "memory", "quality", "artifact", "report_png"}
    assert report["command"].startswith(f"bgeprune bench {export} --compare {BASE} -o {out} --beir {beir}")
    assert report["models"]["model"]["kind"] == "hf-model" and report["models"]["model"]["layers"] == 2
    for point in report["speed"]:
        assert point["speedup"] == pytest.approx(point["model"]["sentences_per_s"] / point["base"]["sentences_per_s"])
        assert point["flops_speedup"] == pytest.approx(point["base"]["flops_per_token"]
                                                       / point["model"]["flops_per_token"])
        assert point["speedup_efficiency"] == pytest.approx(point["speedup"] / point["flops_speedup"])
        assert {"p50_ms", "p90_ms", "p99_ms", "cv", "tokens_per_s"} <= set(point["model"])
    assert report["speed"][0]["flops_speedup"] == pytest.approx(1.5, rel=0.01)  # 2 of 3 identical layers
    assert report["headline"]["batch"] == 4 and "speedup_efficiency" in report["headline"]
    assert report["memory"]["model"]["peak_rss_bytes"] > 0 and "ratio" in report["memory"]
    quality = report["quality"]
    assert quality["modes"] == ["dense", "sparse", "colbert", "m3"]
    beir_modes = quality["beir"]["beir"]["modes"]
    assert set(beir_modes) == set(quality["modes"])
    assert beir_modes["dense"]["ratio"]["ndcg@10"] == pytest.approx(
        beir_modes["dense"]["model"]["ndcg@10"] / beir_modes["dense"]["base"]["ndcg@10"])
    assert quality["bitext"]["de"]["pairs"] == 3 and "accuracy" in quality["bitext"]["de"]["modes"]["colbert"]["model"]
    german = quality["bitext"]["de"]
    assert set(german["cross_lingual"]) == set(quality["modes"]) and "ndcg@10" in german["cross_lingual"]["m3"]["base"]
    assert quality["bitext_worst"]["dense"]["model"]["language"] == "de"  # one language: the worst is it
    assert quality["cross_lingual_mean"]["dense"]["model"] == german["cross_lingual"]["dense"]["model"]
    assert german["asymmetric"]["model_queries_base_docs"]["metrics"]["accuracy"] >= 0
    from bgeprune_cli.bench.render import _asymmetric_rows, _quality_rows

    quality_rows = [row[0] for row in _quality_rows(quality, ["model", "base"])]
    assert {"de→en retrieval nDCG@10", "bitext worst language, accuracy"} <= set(quality_rows)
    assert [row[0] for row in _asymmetric_rows(quality)][-3:] == [
        "de→en retrieval nDCG@10", "xx→en retrieval mean nDCG@10", "xx→en retrieval worst language"]
    assert set(quality["agreement"]["modes"]["dense"]) >= {"spearman_pairwise", "dense_cosine_mean"}
    artifact = read_artifact(out, "bench-report")
    assert artifact.read_json("report.json")["headline"] == report["headline"]
    png = artifact.file("report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(str(out / "report.png")).shape[:2]
    assert width > 1000 and height > 400  # two panels: quality vs throughput, kept layers


def test_bench_tables_on_stderr_without_compare_or_speed(tmp_path, export):
    result = bench(export, "--no-speed", "--no-memory", "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "Size" in result.stderr and " ".join(result.stdout.split()).startswith(f"→ {tmp_path / 'r'}")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["speed"] == [] and "base" not in report["models"]
    assert (tmp_path / "r" / "report.png").is_file()  # the kept-layers panel alone


# ---------------------------------------------------------------- bad input


def test_qrels_pointing_at_missing_documents_is_a_data_error(tmp_path, export):
    beir = _write_beir(tmp_path / "beir", qrels="q1\td1\t1\nq2\tmissing-doc\t1\n")
    with pytest.raises(DataError, match=r"qrels.tsv: 1 judgement\(s\) point at documents missing .*2 \(missing-doc\)"):
        load_beir(beir)
    result = bench(export, "--beir", beir, "--no-speed", "-o", tmp_path / "r")
    assert result.exit_code == 2 and "missing-doc" in result.stderr
    assert not (tmp_path / "r").exists()


def test_empty_query_file_and_other_bad_data(tmp_path):
    with pytest.raises(DataError, match="queries.jsonl is empty"):
        load_beir(_write_beir(tmp_path / "empty", queries={}))
    bad = _write_beir(tmp_path / "bad")
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not valid JSON"):
        load_beir(bad)
    with pytest.raises(DataError, match="not a directory"):
        load_beir(tmp_path / "nowhere")
    one = tmp_path / "one.jsonl"
    one.write_text('{"en": "hi", "de": "hallo"}\n')
    with pytest.raises(DataError, match="needs at least 2"):
        load_bitext(one)
    one.write_text('{"en": "hi", "de": "hallo", "fr": "salut"}\n{"en": "a", "de": "b"}\n')
    with pytest.raises(DataError, match="exactly one other language"):
        load_bitext(one)


def test_a_directory_that_is_not_a_model(tmp_path, export):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("hello")
    result = bench(tmp_path / "notes", "--no-speed", "-o", tmp_path / "r")
    assert result.exit_code == 3 and "is not a model: it has no config.json" in result.stderr
    result = bench(export.parent / "run" / "masks", "--no-speed", "-o", tmp_path / "r")
    assert result.exit_code == 3 and "'masks' artifact, not a model" in result.stderr
    result = bench(tmp_path / "does-not-exist", "--no-speed", "-o", tmp_path / "r")
    assert result.exit_code == 4 and "does not exist" in result.stderr


def test_tampered_export_weights_are_refused(tmp_path, export):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    with open(copy / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\0\0\1")
    result = bench(copy, "--no-speed", "-o", tmp_path / "r")
    assert result.exit_code == 3 and "does not match the sha256" in result.stderr


def test_bad_options_and_missing_environment(tmp_path, export, monkeypatch):
    result = bench(export, "--batch-sizes", "1,x", "-o", tmp_path / "r")
    assert result.exit_code == 2 and "comma-separated integers" in result.stderr
    result = bench(export, "--repeats", "1", "-o", tmp_path / "r")
    assert result.exit_code == 2 and "--repeats >= 2" in result.stderr
    if not torch.cuda.is_available():
        result = bench(export, "--device", "cuda", "-o", tmp_path / "r")
        assert result.exit_code == 4 and "no CUDA GPU" in result.stderr
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mteb" else real(name, *a))
    result = bench(export, "--no-speed", "--no-memory", "--mteb", "STS22.v2", "-o", tmp_path / "r")
    assert result.exit_code == 4 and "pip install 'mteb>=2'" in result.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    result = bench(export, "--no-speed", "-o", tmp_path / "full")
    assert result.exit_code == 2 and (tmp_path / "full" / "x").read_text() == "keep me"
