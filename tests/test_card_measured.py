"""`bgeprune card`: verify's and bench's reports in the export's model card and model-index, only from
reports that measured this export, with the manifest kept checkable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bgeprune_cli.artifacts import read_artifact
from bgeprune_cli.cli import app
from bgeprune_cli.stages import export_hf, prune
from conftest import keep_only, make_run
from test_bench import _write_beir

BASE = "builtin:tiny-bge-m3"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory, builtin_cache):
    """An export with Matryoshka widths, its verify report, and a bench report with --dims (absolute paths)."""
    root = tmp_path_factory.mktemp("card")
    run = make_run(root / "run", BASE, {"layer": keep_only(3, 0, 2)}, distill={"matryoshka_dims": [64, 32]})
    prune.run(run / "masks")
    export_hf.run(run, root / "out")
    beir = _write_beir(root / "beir")
    bitext = root / "de.jsonl"
    bitext.write_text("\n".join(json.dumps({"en": e, "de": d}) for e, d in
                                [("hello", "hallo"), ("good morning", "guten Morgen"), ("thank you", "danke")]))
    result = invoke("verify", root / "out", "--report", root / "verify")
    assert result.exit_code == 0, result.output
    result = invoke("bench", root / "out", "--compare", BASE, "--beir", beir, "--bitext", bitext, "--dims", "32",
                    "--no-speed", "--no-memory", "-o", root / "bench")
    assert result.exit_code == 0, result.output
    return root


def _front_and_body(path: Path) -> tuple[dict, str]:
    front, body = re.match(r"^---\n(.*?)\n---\n(.*)$", path.read_text(), re.DOTALL).groups()
    return yaml.safe_load(front), body


def test_the_card_carries_the_reports_numbers_and_the_export_still_verifies(measured):
    out = measured / "out"
    before = (out / "README.md").read_text()
    result = invoke("card", out, "--verify", measured / "verify", "--bench", measured / "bench", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_index_results"] == 2  # one BEIR set, one bitext language
    front, body = _front_and_body(out / "README.md")
    assert body.startswith(before.split("\n---\n", 1)[1])  # the card as written, then the measured section
    report = json.loads((measured / "bench" / "report.json").read_text())
    dense = report["quality"]["beir"]["beir"]["modes"]["dense"]
    [index] = front["model-index"]
    retrieval = index["results"][0]
    assert retrieval["task"]["type"] == "Retrieval" and retrieval["metrics"][0] == {
        "type": "ndcg_at_10", "value": round(dense["model"]["ndcg@10"], 4), "name": "nDCG@10 (dense)"}
    assert front["pipeline_tag"] == "sentence-similarity"  # the rest of the front matter as it was
    measured_part = body.split("## Measured")[1]
    assert "### Verified: passed" in measured_part and "| parity |" in measured_part
    assert f"| {dense['model']['ndcg@10']:.4f} | {dense['base']['ndcg@10']:.4f} | {dense['ratio']['ndcg@10']:.1%} |" \
        in measured_part
    assert "bitext, worst language" in measured_part and "| beir | nDCG@10 | 32 |" in measured_part
    assert str(measured) not in (out / "README.md").read_text()  # the bench command without local paths
    assert "bgeprune bench out --compare builtin:tiny-bge-m3" in measured_part
    artifact = read_artifact(out, "hf-model")
    artifact.file("README.md")  # the manifest lists the new card's hash
    assert artifact.info["card"]["verified"] is True and artifact.info["card"]["benched"] is True
    again = invoke("verify", out)
    assert again.exit_code == 0, again.output

    # Again, with the bench report alone: one measured section, rebuilt from what was given.
    result = invoke("card", out, "--bench", measured / "bench")
    assert result.exit_code == 0, result.output
    text = (out / "README.md").read_text()
    assert text.count("## Measured") == 1 and "### Verified" not in text


def test_a_report_of_another_model_is_refused_and_the_card_is_untouched(measured, tmp_path):
    other = make_run(tmp_path / "run", BASE, {"layer": keep_only(3, 0, 1)})
    prune.run(other / "masks")
    export_hf.run(other, tmp_path / "other")
    before = (tmp_path / "other" / "README.md").read_bytes()
    result = invoke("card", tmp_path / "other", "--bench", measured / "bench")
    assert result.exit_code == 3 and "did not measure" in result.stderr, result.output
    assert "bgeprune bench EXPORT" in result.stderr
    assert (tmp_path / "other" / "README.md").read_bytes() == before


def test_nothing_to_add_and_not_an_export_exit_with_their_codes(measured, tmp_path):
    result = invoke("card", measured / "out")
    assert result.exit_code == 2 and "--bench REPORT and/or --verify REPORT" in result.stderr
    result = invoke("card", tmp_path, "--bench", measured / "bench")
    assert result.exit_code == 3, result.output


def test_a_trimmed_vocabularys_coverage_is_in_the_section():
    from bgeprune_cli.models.card_measured import bench_section

    report = {"environment": {"device": "cpu", "cpu": "x", "dtype": "float32", "versions": {"torch": "2"}},
              "command": "bgeprune bench out --compare base", "models": {"base": {"label": "base"}},
              "coverage": {"bitext de": {"texts": 1200, "exact": 0.995, "tokens_kept": 0.9991}}}
    lines = bench_section(report)
    assert "| bitext de | 1,200 | 99.5% | 99.9% |" in lines
