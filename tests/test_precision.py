"""Half-precision exports (`export-hf --dtype`): rounded weights, the config that says so, and verify
proving them at their dtype's tolerance (and failing them at float32's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from bgeprune_cli.artifacts import read_artifact
from bgeprune_cli.cli import app
from bgeprune_cli.models.precision import TOLERANCES, min_cosines, round_weights
from bgeprune_cli.stages import prune
from conftest import keep_only, make_run

BASE = "builtin:tiny-bge-m3"
runner = CliRunner()


def test_rounding_keeps_integer_buffers():
    state = {"w": torch.tensor([1.0001, 2.0]), "ids": torch.arange(3)}
    rounded = round_weights(state, "bfloat16")
    assert rounded["w"].dtype == torch.bfloat16 and rounded["ids"].dtype == torch.int64
    assert torch.equal(rounded["ids"], state["ids"])


def test_lowest_cosine_by_hand():
    expected = {"states": torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), "sparse_token_ids": torch.tensor([[1.0, 2.0]]),
                "embedding": torch.tensor([[3.0, 4.0]])}
    got = {"states": torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]), "sparse_token_ids": torch.tensor([[5.0, 6.0]]),
           "embedding": torch.tensor([[6.0, 8.0]])}
    cosines = min_cosines(expected, got)
    assert cosines["states"] == pytest.approx(2 ** -0.5)  # the padding row of zeros is not a vector
    assert cosines["embedding"] == pytest.approx(1.0) and "sparse_token_ids" not in cosines
    assert min_cosines({"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])})["w"] == pytest.approx(
        2 ** -0.5)  # a 1-d output is one vector


@pytest.fixture(scope="module")
def run(tmp_path_factory, builtin_cache) -> Path:
    root = tmp_path_factory.mktemp("precision")
    run = make_run(root / "run", BASE, {"layer": keep_only(3, 0, 2)})
    prune.run(run / "masks")
    return run


def _parity(result) -> dict:
    report = json.loads(result.stdout)
    return {c["name"]: c for c in report["checks"]}["parity"]


@pytest.mark.parametrize("dtype", ["float16", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_a_rounded_export_is_stock_and_verifies_at_its_tolerance(run, tmp_path, dtype):
    out = tmp_path / dtype
    result = runner.invoke(app, ["export-hf", str(run), str(out), "--dtype", dtype])
    assert result.exit_code == 0, result.output
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}
    assert getattr(torch, dtype) in dtypes and torch.float32 not in dtypes
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == dtype
    info = read_artifact(out, "hf-model").info
    assert info["dtype"] == dtype and info["rounded_from"] == "float32"

    verified = runner.invoke(app, ["verify", str(out), "--json"])
    assert verified.exit_code == 0, verified.output
    checks = {c["name"]: c for c in json.loads(verified.stdout)["checks"]}
    assert checks["provenance"]["status"] == "pass"  # each tensor is the unpruned one's slice, rounded
    parity = checks["parity"]
    tolerance = TOLERANCES[dtype]
    assert parity["status"] == "pass" and f"weights rounded to {dtype}" in parity["message"]
    assert parity["details"]["atol"] == tolerance.atol
    assert min(parity["details"]["min_cosine"].values()) >= tolerance.min_cosine
    assert {"colbert", "sparse_weights"} <= set(parity["details"]["min_cosine"])  # bge-m3's modes too

    strict = runner.invoke(app, ["verify", str(out), "--atol", "1e-6", "--json"])
    assert strict.exit_code == 1 and _parity(strict)["status"] == "fail"  # the rounding is real


def test_a_float32_export_is_proved_as_before(run, tmp_path):
    out = tmp_path / "fp32"
    assert runner.invoke(app, ["export-hf", str(run), str(out), "--dtype", "float32"]).exit_code == 0
    assert "rounded_from" not in read_artifact(out, "hf-model").info  # already float32: nothing rounded
    parity = _parity(runner.invoke(app, ["verify", str(out), "--json"]))
    assert parity["status"] == "pass" and parity["details"]["atol"] == 1e-5 and "rounded" not in parity["message"]


@pytest.mark.parametrize("args, message", [
    (["--dtype", "int8"], "--dtype must be"),
    (["--dtype", "float16", "--onnx"], "--onnx traces float32 graphs"),
])
def test_bad_dtype_options_exit_2_writing_nothing(run, tmp_path, args, message):
    result = runner.invoke(app, ["export-hf", str(run), str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_bench_compares_a_half_precision_export_with_the_float32_one(run, tmp_path):
    """The dtype a user downloads, side by side: half the weight bytes, the same retrieval."""
    from test_bench import _write_beir

    for dtype in ("float32", "float16"):
        assert runner.invoke(app, ["export-hf", str(run), str(tmp_path / dtype), "--dtype", dtype]).exit_code == 0
    result = runner.invoke(app, ["bench", str(tmp_path / "float16"), "--compare", str(tmp_path / "float32"),
                                 "--beir", str(_write_beir(tmp_path / "beir")), "--no-speed", "--no-memory",
                                 "--device", "cpu", "-o", str(tmp_path / "bench"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0.45 < report["size_ratio"]["file_bytes"] < 0.6  # the head files stay float32, as upstream ships them
    assert report["quality"]["agreement"]["modes"]["dense"]["dense_cosine_min"] > TOLERANCES["float16"].min_cosine
    ndcg = report["quality"]["beir"]["beir"]["modes"]["dense"]["ratio"]["ndcg@10"]
    assert ndcg == pytest.approx(1.0, abs=0.05)
