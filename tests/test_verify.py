"""verify: a good export passes every check; each broken fixture fails with its own message.

The fixtures reproduce real failure modes: keys renamed to a custom module's names, a missing
`attention.output.dense`, that tensor replaced by an identity matrix, a config that disagrees with
the tensors, a missing tokenizer file, NaN weights.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.models.agreement import agreement
from bgeprune_cli.stages import export_hf, prune, verify
from conftest import keep_only, make_run


@pytest.fixture(scope="module")
def good_export(tmp_path_factory, builtin_cache):
    root = tmp_path_factory.mktemp("verify")
    masks = {"layer": keep_only(3, 0, 2), "heads": torch.stack([keep_only(4, 0, 3)] * 3),
             "hidden": keep_only(64, *range(0, 64, 2))}
    run = make_run(root / "run", "builtin:tiny-xlm-roberta", masks)
    prune.run(run / "masks")
    export_hf.run(run, root / "out")
    return root / "out"


def _checks(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def _tamper_weights(out, edit) -> None:
    state = load_file(str(out / "model.safetensors"))
    edit(state)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def test_good_export_passes_every_check(good_export):
    result = verify.run(good_export)
    checks = _checks(result)
    assert result["ok"], result
    assert {n for n, c in checks.items() if c["status"] == "pass"} == {
        "files", "manifest", "finite", "config-shapes", "identity", "serving-config", "strict-load", "provenance",
        "parity"}
    assert checks["m3-heads"]["status"] == "skip"  # not bge-m3 style
    assert checks["parity"]["details"]["max_abs_diff"]["st_embedding"] <= 1e-5


def _renamed(state):
    for key in [k for k in state if ".attention.self.query." in k]:
        state[key.replace(".attention.self.query.", ".attention.query.")] = state.pop(key)


def _missing_output_dense(state):
    for key in [k for k in state if ".attention.output.dense." in k]:
        del state[key]


def _identity_output_dense(state):
    for key in [k for k in state if k.endswith(".attention.output.dense.weight")]:
        state[key] = torch.eye(state[key].shape[0])


def _nan(state):
    state["encoder.layer.0.intermediate.dense.weight"][0, 0] = float("nan")


WEIGHT_FIXTURES = {
    "renamed-keys": (_renamed, "config-shapes", "renamed keys?"),
    "missing-attention-output-dense": (_missing_output_dense, "config-shapes", "initialise them at random"),
    "identity-attention-output-dense": (_identity_output_dense, "identity", "exact identity matrices"),
    "nan-weights": (_nan, "finite", "NaN or Inf values in 1 tensor"),
}


@pytest.mark.parametrize("fixture", WEIGHT_FIXTURES)
def test_broken_weights_fail_with_their_own_message(tmp_path, good_export, fixture):
    edit, check, message = WEIGHT_FIXTURES[fixture]
    out = tmp_path / "out"
    shutil.copytree(good_export, out)
    _tamper_weights(out, edit)
    result = verify.run(out, run_dir=good_export.parent / "run")  # the copy's lineage.json leads nowhere from here
    checks = _checks(result)
    assert not result["ok"]
    assert checks[check]["status"] == "fail" and message in checks[check]["message"], checks[check]
    assert checks["manifest"]["status"] == "fail"  # the file no longer matches what export-hf wrote
    if fixture in ("renamed-keys", "missing-attention-output-dense"):
        assert checks["strict-load"]["status"] == "fail"
        assert "missing keys" in checks["strict-load"]["message"]
    if fixture == "identity-attention-output-dense":  # loads silently: only provenance and identity catch it
        assert checks["strict-load"]["status"] == "pass"
        assert checks["provenance"]["status"] == "fail"
        assert "attention.output.dense.weight" in checks["provenance"]["message"]


def test_truncated_weights_fail_their_checks_instead_of_crashing(tmp_path, good_export):
    out = tmp_path / "out"
    shutil.copytree(good_export, out)
    with open(out / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    result = verify.run(out)
    checks = _checks(result)
    assert not result["ok"]
    assert checks["manifest"]["status"] == "fail" and "model.safetensors" in checks["manifest"]["message"]
    assert checks["finite"]["status"] == "fail" and "cannot be read as safetensors" in checks["finite"]["message"]


def test_config_that_disagrees_with_tensors_fails(tmp_path, good_export):
    out = tmp_path / "out"
    shutil.copytree(good_export, out)
    config = json.loads((out / "config.json").read_text())
    config["intermediate_size"] += 16
    (out / "config.json").write_text(json.dumps(config))
    checks = _checks(verify.run(out))
    assert checks["config-shapes"]["status"] == "fail"
    assert "config.json sizes disagree" in checks["config-shapes"]["message"]
    assert "intermediate.dense" in checks["config-shapes"]["message"]


def test_missing_tokenizer_file_fails(tmp_path, good_export):
    out = tmp_path / "out"
    shutil.copytree(good_export, out)
    (out / "tokenizer.json").unlink()
    checks = _checks(verify.run(out))
    assert checks["files"]["status"] == "fail"
    assert "tokenizer.json" in checks["files"]["message"] and "tokenizer file" in checks["files"]["message"]


def test_cli_exits_1_on_failed_check_and_prints_json(tmp_path, good_export):
    out = tmp_path / "out"
    shutil.copytree(good_export, out)
    _tamper_weights(out, _nan)
    result = CliRunner().invoke(app, ["verify", str(out), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["ok"] is False


def test_compare_reports_agreement(good_export):
    result = verify.run(good_export, compare="builtin:tiny-xlm-roberta")
    numbers = _checks(result)["compare"]["details"]
    dense = numbers["dense"]
    assert -1 <= dense["spearman_pairwise"] <= 1 and 0 <= dense["top10_overlap"] <= 1
    assert "dense_cosine_mean" not in dense  # 32 vs 64 dims: only dimension-free agreement
    assert "sparse" not in numbers and "colbert" not in numbers  # not bge-m3 style


def test_agreement_of_identical_embeddings_is_perfect():
    embeddings = torch.randn(20, 8)
    numbers = agreement(embeddings, embeddings * 3)
    assert numbers["spearman_pairwise"] == pytest.approx(1.0)
    assert numbers["top10_overlap"] == 1.0 and numbers["dense_cosine_min"] == pytest.approx(1.0)


def test_spearman_gives_tied_scores_their_average_rank():
    from bgeprune_cli.models.agreement import score_agreement, spearman

    # Sparse scores: mostly exact zeros. Ranking ties by position made these two look unrelated or alike at
    # random; with average ranks the zeros tie and only the real order counts.
    ref = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.9])
    got = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.4, 0.8])
    assert spearman(ref, got) == pytest.approx(1.0)
    # Ranks [2.5 ×4, 5, 6] against [2.5 ×4, 6, 5]: deviations from 3.5 give 11.5 / 12.5.
    assert spearman(ref, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.8, 0.4])) == pytest.approx(0.92)
    assert spearman(ref, torch.zeros(6)) == 0.0 and spearman(torch.zeros(6), torch.zeros(6)) == 1.0
    matrix = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.3], [0.0, 0.3, 1.0]])
    assert score_agreement(matrix, matrix * 2)["spearman_pairwise"] == pytest.approx(1.0)


def test_report_is_written_as_a_verify_report_artifact(tmp_path, good_export):
    from bgeprune_cli.artifacts import read_artifact

    verify.run(good_export, report=tmp_path / "report")
    report = read_artifact(tmp_path / "report", "verify-report")
    assert report.info["ok"] is True
    assert report.read_json("report.json")["ok"] is True
