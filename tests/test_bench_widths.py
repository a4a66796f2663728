"""`bench --dims`: quality at smaller output widths, on hand-made vectors and through the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bgeprune_cli.bench.multilingual import retrieval_metrics
from bgeprune_cli.bench.widths import at_widths, summarize_widths, truncate, truncated_scores
from bgeprune_cli.cli import app
from bgeprune_cli.stages import export_hf, prune
from conftest import bool_mask, make_run
from test_bench import BASE, _write_beir

runner = CliRunner()

# Three queries and their three documents. The first two dims alone already separate them; the last two
# make query 2 look like document 0 at full width, so full width gets 2 of 3 and width 2 gets all three.
DOCS = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
QUERIES = {"model": torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.9, 1.0, 3.0, 0.0]]),
           # The base's query 1 lives in the last dims, which width 2 cuts away: it fails there.
           "base": torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])}
BASE_DOCS = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])


def test_truncate_keeps_the_first_dims_and_normalises():
    cut = truncate(torch.tensor([[3.0, 4.0, 100.0]]), 2)
    assert torch.allclose(cut, torch.tensor([[0.6, 0.8]]))


def test_per_width_scores_of_a_hand_made_three_query_set():
    docs = {"model": DOCS, "base": BASE_DOCS}
    names = ["a", "b", "c"]

    def metric(name, width):
        return retrieval_metrics(truncated_scores(QUERIES[name], docs[name], width), names)

    full = {name: metric(name, 4) for name in ("model", "base")}
    assert full["model"]["accuracy"] == pytest.approx(2 / 3) and full["base"]["accuracy"] == 1.0
    got = at_widths([2], ["model", "base"], metric, full)["2"]
    # Width 2, model: every query's nearest document is its own. Base: query 1 cut to (0, 0) scores 0 with
    # every document, a three-way tie, which counts against it (rank 3).
    assert got["model"]["accuracy"] == 1.0
    assert got["base"]["accuracy"] == pytest.approx(2 / 3)
    assert got["ratio"]["accuracy"] == pytest.approx(1.5)
    assert got["of_full"]["model"]["accuracy"] == pytest.approx(1.5)
    assert got["of_full"]["base"]["accuracy"] == pytest.approx(2 / 3)


def test_the_summary_over_languages_names_the_worst_per_width():
    def lang(model, base, full_model, full_base):
        return {"modes": {"dense": {"model": {"accuracy": full_model}, "base": {"accuracy": full_base}}},
                "widths": {"8": {"model": {"accuracy": model}, "base": {"accuracy": base},
                                 "ratio": {"accuracy": model / base}}}}

    bitext = {"vi": lang(0.6, 0.3, 0.8, 0.9), "de": lang(0.9, 0.8, 0.9, 1.0)}
    summary = summarize_widths(bitext, [8], ["model", "base"])["8"]
    assert summary["mean"]["model"]["accuracy"] == pytest.approx(0.75)
    assert summary["mean_of_full"]["model"] == pytest.approx(0.75 / 0.85)
    assert summary["mean_ratio"]["accuracy"] == pytest.approx(0.75 / 0.55)
    assert summary["worst"]["model"] == {"accuracy": 0.6, "language": "vi"}
    assert summary["worst"]["ratio"]["language"] == "de"  # 0.9/0.8 < 0.6/0.3


@pytest.fixture(scope="module")
def export(tmp_path_factory, builtin_cache) -> Path:
    tmp = tmp_path_factory.mktemp("widths")
    run = make_run(tmp / "run", BASE, {"layer": bool_mask(1, 0, 1)})
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp / "out")
    return tmp / "out"


def test_bench_scores_each_width_for_both_models(tmp_path, export):
    beir = _write_beir(tmp_path / "beir")
    bitext = tmp_path / "de.jsonl"
    bitext.write_text("\n".join(json.dumps({"en": e, "de": d}) for e, d in
                                [("hello", "hallo"), ("good morning", "guten Morgen"), ("thank you", "danke")]))
    result = runner.invoke(app, ["bench", str(export), "--compare", BASE, "--beir", str(beir), "--bitext",
                                 str(bitext), "--no-speed", "--no-memory", "--dims", "32,16",
                                 "-o", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    quality = report["quality"]
    assert quality["dims"] == [32, 16] and report["command"].endswith("--dims 32,16")
    at_16 = quality["beir"]["beir"]["widths"]["16"]
    assert set(at_16) == {"model", "base", "ratio", "of_full"} and "ndcg@10" in at_16["base"]
    assert at_16["of_full"]["model"]["ndcg@10"] == pytest.approx(
        at_16["model"]["ndcg@10"] / quality["beir"]["beir"]["modes"]["dense"]["model"]["ndcg@10"])
    assert quality["bitext_widths"]["32"]["worst"]["model"]["language"] == "de"
    from bgeprune_cli.bench.render import _width_rows

    rows = _width_rows(quality, ["model", "base"])
    assert [row[:2] for row in rows][:3] == [["beir nDCG@10", "32"], ["bitext de accuracy", "32"],
                                            ["bitext mean accuracy", "32"]]
    assert len(rows) == 8 and all(len(row) == 7 for row in rows)


@pytest.mark.parametrize("dims, data, message", [
    ("0", True, "positive widths"),
    ("4096", True, "wider than"),
    ("8", False, "give the data too"),
    ("8,x", True, "comma-separated integers"),
])
def test_bad_widths_exit_2(tmp_path, export, dims, data, message):
    extra = ["--beir", str(_write_beir(tmp_path / "beir"))] if data else []
    result = runner.invoke(app, ["bench", str(export), "--compare", BASE, *extra, "--dims", dims,
                                 "--no-memory", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "r").exists()
