"""An export names no absolute local path (docs/publishing.md, What an export records): its provenance is
relative to the export directory, with the hashes that make it checkable, and every reader still finds
what it names. `export-hf --local-paths` keeps the absolute form.

The export is made the way a user makes one: a recipe whose base is a local directory and whose data,
trimming corpus and run directory are absolute paths, through magnitude -> finalize-masks -> prune ->
export-hf (with ONNX), under a command line full of absolute paths.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bgeprune_cli.artifacts import read_artifact
from bgeprune_cli.cli import app
from bgeprune_cli.config import load_recipe
from bgeprune_cli.errors import ArtifactError
from bgeprune_cli.models.loading import load_model, recipe_base_dims, resolve_base
from bgeprune_cli.outputs import lineage
from bgeprune_cli.published import PublicPaths, relative_path, resolve_recorded
from bgeprune_cli.stages import export_hf, export_onnx, finalize_masks, magnitude, prune, verify
from conftest import keep_only, make_run

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "recipes" / "corpora" / "smoke-en-de-fr.txt"  # in the checkout: nothing in common with tmp
PROGRAM = str(Path.home() / ".local" / "bin" / "bgeprune")  # where pip --user puts it


def _run_stages(root: Path) -> tuple[Path, Path, Path]:
    """(the local base directory, the data file, the run) of a recipe full of absolute paths."""
    base = root / "models" / "my-base"
    shutil.copytree(resolve_base("builtin:tiny-bge-m3"), base)
    data = root / "data" / "train.txt"
    data.parent.mkdir()
    data.write_text("a passage to train on\nanother passage\n", encoding="utf-8")
    run = root / "runs" / "x"
    recipe = root / "recipe.toml"
    recipe.write_text(f'[base]\nmodel = "{base}"\n[run]\ndir = "{run}"\n[data]\ntrain = ["{data}"]\n'
                      f'[target]\nlayers = 2\nheads = 2\nhidden = 32\nffn = 64\n[vocab]\ncorpus = ["{CORPUS}"]\n',
                      encoding="utf-8")
    magnitude.run(load_recipe(recipe, base_dims=recipe_base_dims), run_dir=run)
    finalize_masks.run(run / "train")
    prune.run(run / "masks")
    return base, data, run


@pytest.fixture(scope="module")
def built(tmp_path_factory, builtin_cache):
    """The run, the export (written under an absolute OUT, from a command line of absolute paths) and the
    local paths none of its files may name."""
    root = tmp_path_factory.mktemp("paths")
    base, data, run = _run_stages(root)
    out = root / "exports" / "my-model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [PROGRAM, "export-hf", str(run), str(out), "--name=mine", "--onnx"])
        export_hf.run(run, out, name="mine", onnx=True)
    forbidden = {str(tmp_path_factory.getbasetemp()), str(root), str(ROOT), str(Path.home()), str(base),
                 str(builtin_cache), str(data.parent)}
    forbidden |= {str(Path(p).resolve()) for p in forbidden}
    return {"root": root, "base": base, "data": data, "run": run, "out": out, "forbidden": sorted(forbidden)}


def _leaks(directory: Path, forbidden: list[str]) -> list[str]:
    """'file: path' for every file under `directory` whose bytes hold one of `forbidden`."""
    found = []
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = file.read_bytes()
        found += [f"{file.relative_to(directory)}: {path}" for path in forbidden if path.encode() in data]
    return found


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _checks(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def test_no_file_of_the_export_names_a_local_path(built):
    out = built["out"]
    assert {"manifest.json", "lineage.json", "README.md", "config.json", "tokenizer.json", "vocab_map.json",
            "onnx/model.onnx"} <= {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert _leaks(out, built["forbidden"]) == []


def test_lineage_names_the_run_relative_to_the_export_with_its_hashes(built):
    out, run = built["out"], built["run"]
    record = _json(out / "lineage.json")
    assert [(a["kind"], a["path"]) for a in record["artifacts"]] == [
        ("pruned-model", "../../runs/x/pruned"), ("masks", "../../runs/x/masks"), ("train-run", "../../runs/x/train")]
    for entry in record["artifacts"]:
        artifact = read_artifact(resolve_recorded(entry["path"], out), entry["kind"])
        assert artifact.path == (run / artifact.path.name).resolve()
        assert artifact.manifest_sha256 == entry["manifest_sha256"]
    assert record["source_weights"] == {"base": "my-base", "file": "model.safetensors"}  # magnitude: the base's


def test_manifest_records_the_recipe_argv_and_input_without_local_paths(built):
    out, run = built["out"], built["run"]
    manifest = _json(out / "manifest.json")
    recipe = manifest["recipe"]
    assert recipe["base"]["model"] == "my-base"  # a local base: its name only
    assert recipe["data"]["train"] == ["../../data/train.txt"]  # relative to the export
    # The name alone where the checkout shares only the root with tmp; else a path relative to the export.
    assert recipe["vocab"]["corpus"] in ([CORPUS.name], [relative_path(CORPUS, out)])
    assert not recipe["vocab"]["corpus"][0].startswith("/")
    assert recipe["run"]["dir"] == "../../runs/x"
    assert manifest["recipe_sha256"] == read_artifact(run / "pruned").manifest["recipe_sha256"]  # the run's
    assert manifest["info"]["vocab"]["corpus"]["files"] in ([CORPUS.name], [relative_path(CORPUS, out)])
    assert manifest["argv"] == ["bgeprune", "export-hf", "../../runs/x", ".", "--name=mine", "--onnx"]
    assert manifest["inputs"] == [{"path": "../../runs/x/pruned", "kind": "pruned-model",
                                   "manifest_sha256": read_artifact(run / "pruned").manifest_sha256}]


def test_readers_resolve_the_relative_paths_against_the_export(built):
    out, run = built["out"], built["run"]
    export = read_artifact(out, "hf-model")
    assert export.input("pruned-model").path == (run / "pruned").resolve()
    assert {(run / name).resolve() for name in ("pruned", "masks", "train")} <= set(lineage([out]))  # outputs.py


def test_the_card_names_the_base_and_the_export_without_paths(built):
    card = (built["out"] / "README.md").read_text(encoding="utf-8")
    assert "Structurally pruned from `my-base`" in card
    assert 'SentenceTransformer("my-model")' in card  # OUT was absolute and outside the working directory


def test_verify_finds_the_run_through_the_relative_lineage(built):
    result = verify.run(built["out"])
    checks = _checks(result)
    assert result["ok"], result
    assert checks["provenance"]["status"] == "pass" and checks["parity"]["status"] == "pass"
    assert checks["tokenizer"]["status"] == "pass" and checks["onnx-parity"]["status"] == "pass"


def test_a_moved_copy_verifies_alone_or_with_its_run_and_export_onnx_adds_no_path(built, tmp_path):
    copy = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(built["out"], copy)
    result = verify.run(copy)
    checks = _checks(result)
    assert result["ok"], result  # as when the run is gone: everything but provenance and parity
    assert checks["provenance"]["status"] == "skip" and checks["parity"]["status"] == "skip"
    assert "--run" in checks["parity"]["message"] and "../../runs/x/masks" in checks["parity"]["message"]
    checks = _checks(verify.run(copy, run_dir=built["run"]))
    assert checks["provenance"]["status"] == "pass" and checks["parity"]["status"] == "pass"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [PROGRAM, "export-onnx", str(copy), "--force"])
        export_onnx.run(copy, force=True)
    assert _json(copy / "manifest.json")["amended"][-1]["argv"] == ["bgeprune", "export-onnx", ".", "--force"]
    assert _leaks(copy, built["forbidden"] + [str(tmp_path)]) == []


def test_a_run_made_again_is_not_taken_for_the_export_s_run(built, tmp_path):
    """A relative path can lead to another run (a copy of both, a run made again): its hash tells."""
    root = tmp_path / "copy"
    shutil.copytree(built["root"] / "runs", root / "runs")
    shutil.copytree(built["out"], root / "exports" / "my-model")
    manifest = _json(root / "runs" / "x" / "masks" / "manifest.json")
    manifest["created_unix"] += 1
    (root / "runs" / "x" / "masks" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    checks = _checks(verify.run(root / "exports" / "my-model"))
    assert checks["parity"]["status"] == "skip" and "not the ones this export was made from" in \
        checks["parity"]["message"]


def test_an_input_recorded_by_name_only_is_read_and_says_so_when_followed(built, tmp_path):
    copy = tmp_path / "my-model"
    shutil.copytree(built["out"], copy)
    manifest = _json(copy / "manifest.json")
    entry = manifest["inputs"][0]
    manifest["inputs"] = [{"name": "pruned", "kind": entry["kind"], "manifest_sha256": entry["manifest_sha256"]}]
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ArtifactError, match="only by name"):
        read_artifact(copy, "hf-model").input("pruned-model")
    assert lineage([copy]) == [copy.resolve()]


def test_local_paths_keeps_the_absolute_form(built, tmp_path):
    run, out = built["run"], tmp_path / "local"
    result = CliRunner().invoke(app, ["export-hf", str(run), str(out), "--local-paths", "--json"])
    assert result.exit_code == 0, result.output
    record, manifest = _json(out / "lineage.json"), _json(out / "manifest.json")
    assert [a["path"] for a in record["artifacts"]] == [str((run / n).resolve()) for n in ("pruned", "masks", "train")]
    assert record["source_weights"] == str((built["base"] / "model.safetensors").resolve())
    assert manifest["inputs"][0]["path"] == str((run / "pruned").resolve())
    assert manifest["recipe"]["base"]["model"] == str(built["base"])
    assert manifest["recipe"]["data"]["train"] == [str(built["data"])]
    assert manifest["argv"] == sys.argv and manifest["info"]["local_paths"] is True
    assert f'SentenceTransformer("{out}")' in (out / "README.md").read_text(encoding="utf-8")
    assert {leak.split(":")[0] for leak in _leaks(out, [str(run.resolve())])} == {"lineage.json", "manifest.json"}
    checks = _checks(verify.run(out))
    assert checks["parity"]["status"] == "pass"


def test_the_run_s_student_weights_are_named_relative_with_their_sha256(tmp_path, builtin_cache):
    student = load_model(resolve_base("builtin:tiny-xlm-roberta")).state_dict()
    run = make_run(tmp_path / "run", "builtin:tiny-xlm-roberta", {"layer": keep_only(3, 0, 2)},
                   student={k: v.clone() for k, v in student.items() if torch.is_tensor(v)})
    prune.run(run / "masks")
    export_hf.run(run, tmp_path / "out")
    train = read_artifact(run / "train", "train-run")
    sha = next(e["sha256"] for e in train.manifest["files"] if e["path"] == "student.safetensors")
    assert _json(tmp_path / "out" / "lineage.json")["source_weights"] == {"path": "../run/train/student.safetensors",
                                                                          "sha256": sha}
    assert _json(tmp_path / "out" / "manifest.json")["recipe"]["base"]["model"] == "builtin:tiny-xlm-roberta"
    assert _leaks(tmp_path / "out", [str(tmp_path), str(ROOT), str(Path.home())]) == []


def test_paths_with_nothing_in_common_but_the_root_are_named_only(monkeypatch):
    paths = PublicPaths(Path("/srv/exports/x"))
    assert relative_path("/data/runs/x/pruned", "/srv/exports/x") is None
    assert paths.artifact(Path("/data/runs/x/pruned")) == {"name": "pruned"}
    assert paths.artifact(Path("/srv/runs/x/pruned")) == {"path": "../../runs/x/pruned"}
    assert paths.file("/data/train.jsonl") == "train.jsonl" and paths.file("data/*.jsonl") == "data/*.jsonl"
    assert paths.file("builtin:probe") == "builtin:probe"
    assert paths.base("BAAI/bge-m3") == "BAAI/bge-m3" and paths.base("builtin:tiny-bert") == "builtin:tiny-bert"
    assert paths.base("/data/models/my-bge/") == "my-bge"
    monkeypatch.setenv("HOME", "/home/alice")  # a path through the directory of home directories names none
    assert PublicPaths(Path("/home/bob/out")).artifact(Path("/home/alice/runs/x")) == {"name": "x"}
    assert PublicPaths(Path("/home/alice/out")).artifact(Path("/home/alice/runs/x")) == {"path": "../runs/x"}


def test_argv_loses_every_absolute_path_and_keeps_the_rest():
    paths = PublicPaths(Path("/srv/exports/x"))
    argv = ["/home/me/.venv/bin/bgeprune", "export-hf", "runs/x", "/srv/exports/x", "--out=/srv/runs/y",
            "--set", "data.train=/data/a.txt", "--set", 'vocab.corpus=["/data/b.txt"]', "-q"]
    assert paths.argv(argv) == ["bgeprune", "export-hf", "runs/x", ".", "--out=../../runs/y", "--set",
                                "data.train=a.txt", "--set", 'vocab.corpus=["b.txt"]', "-q"]
    assert PublicPaths(Path("/srv/exports/x"), local=True).argv(argv) == argv


def test_recipe_streams_and_data_summaries_are_published():
    paths = PublicPaths(Path("/srv/exports/x"))
    recipe = {"base": {"model": "BAAI/bge-m3", "revision": "abc"},
              "data": {"train": [], "stream": [{"dataset": "json", "data_files": ["/srv/data/a.jsonl"]},
                                               {"dataset": "/data/local-dataset", "data_files": None}]}}
    published = paths.recipe(recipe)
    assert published["base"] == {"model": "BAAI/bge-m3", "revision": "abc"}
    assert [s["data_files"] for s in published["data"]["stream"]] == [["../../data/a.jsonl"], None]
    assert published["data"]["stream"][1]["dataset"] == "local-dataset"
    assert recipe["data"]["stream"][0]["data_files"] == ["/srv/data/a.jsonl"]  # the run's record is untouched
    summary = {"train": {"datasets": [{"dataset": "/data/local-dataset"}, {"dataset": "HuggingFaceFW/fineweb-2"}],
                         "streaming": True}, "pairs": None}
    assert [d["dataset"] for d in paths.data_summary(summary)["train"]["datasets"]] == [
        "local-dataset", "HuggingFaceFW/fineweb-2"]
