"""ONNX: the graphs of tiny XLM-R, BERT and bge-m3 exports (pruned on every axis, hidden included)
reproduce the PyTorch export, the int8 graph is what onnxruntime's quantizer makes, verify proves
and reports them, and every bad input fails with its message and exit code."""

from __future__ import annotations

import builtins
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from bgeprune_cli.artifacts import read_artifact, sha256_file
from bgeprune_cli.cli import app
from bgeprune_cli.config import BaseDims
from bgeprune_cli.errors import BadModelFiles
from bgeprune_cli.models import m3
from bgeprune_cli.models.loading import load_model, load_tokenizer, read_config, resolve_base
from bgeprune_cli.models.onnx.export import M3_OUTPUTS, export_onnx, quantize_int8
from bgeprune_cli.models.onnx.runtime import OnnxEncoder, probe_outputs
from bgeprune_cli.models.probe import max_abs_diff, model_outputs
from bgeprune_cli.models.st_files import read_pooling
from bgeprune_cli.stages import export_hf, prune, verify
from bgeprune_cli.stages import export_onnx as export_onnx_stage
from bgeprune_cli.verification.onnx_checks import INT8_MIN_SPEARMAN
from conftest import make_run
from test_compat import _stock_case

runner = CliRunner()
BASES = {"xlmr": "builtin:tiny-xlm-roberta", "bert": "builtin:tiny-bert", "m3": "builtin:tiny-bge-m3"}
# Lengths the probe below runs at (a batch of one, padded batches), none of them the traced length.
TEXTS = ["Kurz.", "A somewhat longer sentence about pruning encoders, and then some more words.",
         "Ein dritter Text, mittellang.", "x", "Structured pruning removes whole heads, FFN units and layers " * 3]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, builtin_cache):
    """One export per family, pruned on layers, heads, FFN and hidden: m3 through export-hf --onnx, the
    others through export-onnx on a finished export (both paths)."""
    root = tmp_path_factory.mktemp("onnx")
    result = {}
    for seed, (family, base) in enumerate(BASES.items()):
        dims = BaseDims.from_config(read_config(resolve_base(base)))
        run = make_run(root / family / "run", base, _stock_case(dims, seed))
        prune.run(run / "masks")
        out = root / family / "out"
        if family == "m3":
            export_hf.run(run, out, onnx=True)
        else:
            export_hf.run(run, out)
            export_onnx_stage.run(out)
        result[family] = out
    return result


def _batches(tokenizer, max_length: int) -> list[dict]:
    return [dict(tokenizer(TEXTS[:1], return_tensors="pt")),
            dict(tokenizer(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")),
            dict(tokenizer(TEXTS[1:3], padding=True, return_tensors="pt"))]


@pytest.mark.parametrize("family", BASES)
def test_fp32_graph_reproduces_the_pytorch_export(exports, family):
    out = exports[family]
    info = read_artifact(out, "hf-model").info["onnx"]
    tokenizer, pooling = load_tokenizer(out), read_pooling(out)
    model = load_model(out)
    heads = m3.load_heads(out, model.config.hidden_size)
    assert (heads is not None) == (family == "m3")
    graph = OnnxEncoder(out / "onnx" / "model.onnx")
    assert graph.outputs == ["last_hidden_state"] + (list(M3_OUTPUTS) if heads is not None else [])
    assert graph.inputs == (["input_ids", "attention_mask", "token_type_ids"] if family == "bert"
                            else ["input_ids", "attention_mask"])
    for max_length in (12, 40):
        batches = _batches(tokenizer, max_length)
        lengths = {b["input_ids"].shape[1] for b in batches}
        assert info["traced_with"]["length"] not in lengths and {1, 2, 5} == {len(b["input_ids"]) for b in batches}
        reference = model_outputs(model, batches, pooling, heads=heads)
        got = probe_outputs(graph, batches, pooling)
        if heads is not None:
            reference["dense_vecs"] = reference["embedding"]  # bge-m3's dense: normalised CLS
        diffs = max_abs_diff(reference, got)
        assert set(diffs) == set(got) == ({"last_hidden", "embedding"} | (
            {"dense_vecs", "sparse_weights", "colbert"} if heads is not None else set()))
        assert max(diffs.values()) <= 1e-4, diffs
    if heads is not None:  # ColBERT rows of padding are zero, as FlagEmbedding's are
        batch = _batches(tokenizer, 40)[1]
        colbert = graph.run(batch)["colbert_vecs"]
        assert colbert.shape[1] == batch["input_ids"].shape[1] - 1
        assert float(colbert[~batch["attention_mask"][:, 1:].bool()].abs().max()) == 0.0


def test_int8_graph_equals_quantizing_the_full_graph(exports, tmp_path):
    """The table is quantized after the fact (memory); the result must be what onnxruntime makes of the whole graph."""
    out = exports["m3"]
    quantize_int8(out / "onnx" / "model.onnx", tmp_path / "direct.onnx")
    tokenizer, pooling = load_tokenizer(out), read_pooling(out)
    batches = _batches(tokenizer, 40)
    ours = probe_outputs(OnnxEncoder(out / "onnx" / "model_qint8_avx512_vnni.onnx"), batches, pooling)
    direct = probe_outputs(OnnxEncoder(tmp_path / "direct.onnx"), batches, pooling)
    assert max(max_abs_diff(ours, direct).values()) == 0.0
    fp32 = probe_outputs(OnnxEncoder(out / "onnx" / "model.onnx"), batches, pooling)
    assert 1e-4 < max(max_abs_diff(fp32, ours).values()) < 0.5  # really quantized, and still close


def test_export_layout_and_manifest(exports):
    for family, out in exports.items():
        artifact = read_artifact(out, "hf-model")
        listed = {e["path"]: e for e in artifact.manifest["files"]}
        files = sorted(p.relative_to(out).as_posix() for p in (out / "onnx").iterdir())
        assert files == ["onnx/model.onnx", "onnx/model.onnx_data", "onnx/model_qint8_avx512_vnni.onnx"]
        for name in files:  # every ONNX file is hashed in the manifest
            assert listed[name]["sha256"] == sha256_file(out / name)
        info = artifact.info["onnx"]
        assert info["opset"] == 17 and info["int8"]["per_channel"] is True
        assert ("amended" in artifact.manifest) == (family != "m3")  # export-onnx amends, export-hf --onnx writes
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary debris


def test_verify_proves_the_graphs_and_reports_int8_agreement(exports):
    result = verify.run(exports["m3"])
    checks = {c["name"]: c for c in result["checks"]}
    assert result["ok"], checks
    assert {checks[n]["status"] for n in ("onnx-files", "onnx-parity", "onnx-int8")} == {"pass"}
    assert max(checks["onnx-parity"]["details"]["max_abs_diff"].values()) <= 1e-4
    agreement = checks["onnx-int8"]["details"]["agreement"]
    assert set(agreement) == {"dense", "sparse", "colbert"}
    assert all(v["spearman_pairwise"] >= INT8_MIN_SPEARMAN for v in agreement.values())
    assert {"top10_overlap", "dense_cosine_mean"} <= set(agreement["dense"])
    check = _onnx_checks(exports["m3"], min_spearman=1.01)["onnx-int8"]  # a floor nothing can meet fails, named
    assert check["status"] == "fail" and "under --int8-min-spearman 1.01" in check["message"]


def _onnx_checks(out, min_spearman: float = INT8_MIN_SPEARMAN) -> dict[str, dict]:
    """verify's ONNX checks alone (the full verify runs once, in the test above and on the command line)."""
    from bgeprune_cli.models.probe import probe_batches, probe_texts
    from bgeprune_cli.verification import PROBE_MAX_LENGTH
    from bgeprune_cli.verification.onnx_checks import onnx_checks

    tokenizer, pooling, model = load_tokenizer(out), read_pooling(out), load_model(out)
    heads = m3.load_heads(out, model.config.hidden_size)
    reference = model_outputs(model, probe_batches(tokenizer, probe_texts(), PROBE_MAX_LENGTH), pooling, heads=heads)
    artifact = read_artifact(out, "hf-model")
    checks = onnx_checks(out, artifact, reference, tokenizer, pooling, probe_texts(), PROBE_MAX_LENGTH, min_spearman)
    return {c.name: c.to_json() for c in checks}


def _copy(out, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def test_tampered_missing_and_truncated_graphs(exports, tmp_path):
    copy = _copy(exports["bert"], tmp_path)
    with open(copy / "onnx" / "model.onnx_data", "r+b") as handle:  # one weight changed
        handle.seek(100)
        handle.write(b"\x7f\x7f\x7f\x7f")
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "manifest" in result.stderr and "onnx/model.onnx_data" in result.stderr
    (copy / "onnx" / "model_qint8_avx512_vnni.onnx").unlink()
    checks = _onnx_checks(copy)
    assert checks["onnx-files"]["status"] == "fail"
    assert "missing onnx/model_qint8_avx512_vnni.onnx" in checks["onnx-files"]["message"]
    graph = copy / "onnx" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:200])  # truncated
    with pytest.raises(BadModelFiles, match="model.onnx is not a loadable ONNX graph"):
        OnnxEncoder(graph)
    result = runner.invoke(app, ["bench", str(copy), "--backend", "onnx", "--no-speed", "--no-memory",
                                 "-o", str(tmp_path / "r")])
    assert result.exit_code == 3 and "onnx/model.onnx does not match the sha256" in result.stderr


def test_unlisted_onnx_folder_fails_verify(exports, tmp_path):
    copy = _copy(exports["xlmr"], tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())  # as an interrupted export-onnx leaves it:
    manifest["files"] = [e for e in manifest["files"] if not e["path"].startswith("onnx/")]  # onnx/ renamed into
    del manifest["info"]["onnx"]  # place, manifest not yet rewritten
    (copy / "manifest.json").write_text(json.dumps(manifest))
    checks = _onnx_checks(copy)
    assert checks["onnx-files"]["status"] == "fail" and "not listed in manifest.json" in checks["onnx-files"]["message"]


def test_export_onnx_refusals_force_and_atomicity(exports, tmp_path, monkeypatch):
    copy = _copy(exports["xlmr"], tmp_path)
    result = runner.invoke(app, ["export-onnx", str(copy)])
    assert result.exit_code == 2 and "onnx exists; pass --force" in result.stderr
    (tmp_path / "notes").mkdir()
    result = runner.invoke(app, ["export-onnx", str(tmp_path / "notes")])
    assert result.exit_code == 3 and "not a bgeprune artifact" in result.stderr
    result = runner.invoke(app, ["export-onnx", str(exports["xlmr"].parent / "run" / "pruned")])
    assert result.exit_code == 3 and "'export-onnx' needs 'hf-model'" in result.stderr
    before = (copy / "manifest.json").read_bytes()
    from bgeprune_cli.models.onnx import export as onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("quantizer crashed")

    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    with pytest.raises(RuntimeError, match="quantizer crashed"):
        export_onnx_stage.run(copy, force=True)
    assert (copy / "manifest.json").read_bytes() == before and sorted(p.name for p in (copy / "onnx").iterdir()) == [
        "model.onnx", "model.onnx_data", "model_qint8_avx512_vnni.onnx"]  # the old onnx/ stays, whole
    assert not [p for p in copy.iterdir() if p.name.startswith(".onnx")]
    monkeypatch.undo()
    result = runner.invoke(app, ["export-onnx", str(copy), "--force", "--no-int8", "--json"])
    assert result.exit_code == 0, result.output
    artifact = read_artifact(copy, "hf-model")
    assert sorted(p.name for p in (copy / "onnx").iterdir()) == ["model.onnx", "model.onnx_data"]
    assert [e["path"] for e in artifact.manifest["files"] if e["path"].startswith("onnx/")] == [
        "onnx/model.onnx", "onnx/model.onnx_data"] and artifact.info["onnx"]["int8"] is None
    checks = _onnx_checks(copy)
    assert [c["status"] for c in checks.values()] == ["pass", "pass"] and "onnx-int8" not in checks


def test_missing_extras_exit_4_with_the_install_command(exports, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    for args in (["export-onnx", str(exports["xlmr"]), "--force"],
                 ["export-hf", str(exports["xlmr"].parent / "run"), str(tmp_path / "o"), "--onnx"],
                 ["bench", str(exports["xlmr"]), "--backend", "onnx", "-o", str(tmp_path / "r")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 4, (args, result.output)
        assert "pip install -e '.[onnx]'" in result.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_verify_option_default_is_the_documented_floor():
    result = runner.invoke(app, ["verify", "--help"])
    assert f"default: {INT8_MIN_SPEARMAN}" in " ".join(result.output.split())


def test_export_without_manifest_is_not_traced_by_export_onnx(tmp_path, builtin_cache):
    directory = tmp_path / "model"
    shutil.copytree(resolve_base("builtin:tiny-bert"), directory)
    info = export_onnx(directory, tmp_path)  # the exporter itself works on any model directory (bench uses it)
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    result = runner.invoke(app, ["export-onnx", str(directory)])
    assert result.exit_code == 3 and "has no manifest.json" in result.stderr
    assert json.loads((directory / "config.json").read_text())["model_type"] == "bert"
    assert np.isfinite(OnnxEncoder(tmp_path / "model.onnx").run(
        dict(load_tokenizer(directory)(["hi"], return_tensors="pt")))["last_hidden_state"].numpy()).all()


def test_bench_backends_side_by_side(exports, tmp_path):
    from test_bench import _write_beir

    out = tmp_path / "report"
    result = runner.invoke(app, ["bench", str(exports["m3"]), "--backend", "onnx-int8,torch", "--compare",
                                 BASES["m3"], "--compare-backend", "torch,onnx-int8", "--beir",
                                 str(_write_beir(tmp_path / "beir")), "--batch-sizes", "2", "--seq-lengths", "8",
                                 "--repeats", "2", "--warmup", "0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    models = report["models"]
    assert {k: m["backend"] for k, m in models.items()} == {"model": "onnx-int8", "model@torch": "torch",
                                                            "base": "torch", "base@onnx-int8": "onnx-int8"}
    assert "checked against its manifest" in models["model"]["graph_source"]
    assert models["base@onnx-int8"]["graph_source"].startswith("traced at bench time")
    assert models["model"]["file_bytes"] < models["model@torch"]["file_bytes"]  # the int8 graph is smaller
    assert "--backend onnx-int8,torch --compare-backend torch,onnx-int8" in report["command"]
    point = report["speed"][0]
    assert point["model"]["speedup_vs_base"] == pytest.approx(point["speedup"])
    assert point["model"]["speedup_vs_base_same_backend"] == pytest.approx(
        point["model"]["sentences_per_s"] / point["base@onnx-int8"]["sentences_per_s"])
    entries = report["headline"]["entries"]
    assert set(entries) == set(models) and all(e["model_rss_bytes"] > 0 for e in entries.values())
    ndcg = report["quality"]["beir"]["beir"]["modes"]
    assert set(ndcg) == {"dense", "sparse", "colbert", "m3"}  # ONNX entries give all three modes
    assert set(ndcg["sparse"]["ratios"]) == {"model@torch", "base@onnx-int8"}
    assert entries["model@torch"]["quality_vs_base"] == pytest.approx(ndcg["dense"]["ratios"]["model@torch"]["ndcg@10"])
    assert (out / "report.png").is_file()
    from bgeprune_cli.bench.render import _backend_rows, render_bench

    render_bench(report)  # the tables print from the report as written
    assert [row[0] for row in _backend_rows(report)] == [m["label"] for m in models.values()]
    result = runner.invoke(app, ["bench", str(exports["m3"]), "--backend", "onnx,tensorrt", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "distinct backends from torch, onnx, onnx-int8" in result.stderr
    result = runner.invoke(app, ["bench", str(exports["m3"].parent / "run"), "--backend", "onnx", "--no-speed",
                                 "--no-memory", "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "export-hf" in result.stderr and "--onnx" in result.stderr


def test_verify_reports_a_graph_from_another_export_as_failed_checks(exports, tmp_path):
    """A hand-copied graph crashed verify inside onnxruntime; now the manifest check names the changed
    file, the ONNX check fails with what onnxruntime said, and every check is in the report."""
    copy = tmp_path / "m3"
    shutil.copytree(exports["m3"], copy)
    for name in ("model.onnx", "model.onnx_data"):
        shutil.copy(exports["bert"] / "onnx" / name, copy / "onnx" / name)
    result = CliRunner().invoke(app, ["verify", str(copy), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["manifest"]["status"] == "fail" and "onnx/model.onnx" in checks["manifest"]["message"]
    assert any(c["status"] == "fail" for name, c in checks.items() if name.startswith("onnx"))
    assert "internal error" not in result.output and {"parity", "strict-load"} <= checks.keys()


def test_verify_fails_an_int8_file_that_holds_the_fp32_graph(exports, tmp_path):
    copy = tmp_path / "xlmr"
    shutil.copytree(exports["xlmr"], copy)
    shutil.copy(copy / "onnx" / "model.onnx", copy / "onnx" / "model_qint8_avx512_vnni.onnx")
    result = CliRunner().invoke(app, ["verify", str(copy), "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 1
    assert checks["onnx-int8"]["status"] == "fail" and "holds no quantized operator" in checks["onnx-int8"]["message"]


def _card_python(out) -> list[str]:
    card = (out / "README.md").read_text()
    serving = card[card.index("<!-- bgeprune:serving -->"):card.index("<!-- /bgeprune:serving -->")]
    return re.findall(r"```python\n(.*?)```", serving, re.DOTALL)


@pytest.mark.parametrize("family", ["m3", "xlmr"])  # export-hf --onnx, and export-onnx on a finished export
def test_the_card_shows_how_to_run_the_graphs_and_its_snippet_runs(exports, family):
    out = exports[family]
    card = (out / "README.md").read_text()
    assert "### ONNX" in card and "model_qint8_avx512_vnni.onnx" in card
    assert ("BgeM3EmbeddingModel" in card) == (family == "m3")  # vLLM's override only where the heads are
    [snippet] = _card_python(out)
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=out.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (snippet, proc.stderr[-2000:])
    hidden = read_config(out)["hidden_size"]
    assert proc.stdout.strip() == f"(1, {hidden})"
    read_artifact(out, "hf-model").file("README.md")  # the card as rewritten is the one the manifest lists


def test_a_card_without_graphs_names_none_and_export_onnx_without_int8_names_only_fp32(exports, tmp_path):
    copy = _copy(exports["xlmr"], tmp_path)
    result = runner.invoke(app, ["export-onnx", str(copy), "--force", "--no-int8"])
    assert result.exit_code == 0, result.output
    card = (copy / "README.md").read_text()
    assert "`model.onnx` (fp32)" in card and "qint8" not in card and card.count("## Serving") == 1
    assert _card_python(copy)[0].count('ort.InferenceSession("out/onnx/model.onnx")') == 1
    plain = tmp_path / "plain"
    export_hf.run(exports["xlmr"].parent / "run", plain)
    card = (plain / "README.md").read_text()
    assert "## Serving" in card and "vllm serve plain --runner pooling" in card and "### ONNX" not in card
