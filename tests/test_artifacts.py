"""Artifacts: manifests, atomic writes (nothing partial on failure), checked reads."""

from __future__ import annotations

import json

import pytest

from bgeprune_cli.artifacts import SCHEMA_VERSION, read_artifact, write_artifact
from bgeprune_cli.errors import ArtifactError, UsageError


def make(path, kind="masks", content="hello", force=False, inputs=()):
    with write_artifact(path, kind, force=force, recipe={"a": 1}, recipe_sha256="x", inputs=list(inputs),
                        info={"n": 1}) as tmp:
        (tmp / "data.txt").write_text(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    return read_artifact(path, kind)


def test_manifest_records_everything(tmp_path):
    parent = make(tmp_path / "train", kind="train-run")
    artifact = make(tmp_path / "masks", inputs=[parent])
    manifest = artifact.manifest
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["kind"] == "masks"
    assert [f["path"] for f in manifest["files"]] == ["data.txt", "sub/b.txt"]
    assert manifest["inputs"][0]["kind"] == "train-run"
    assert manifest["inputs"][0]["manifest_sha256"] == parent.manifest_sha256
    assert {"torch", "transformers", "python"} <= set(manifest["versions"])
    assert manifest["recipe_sha256"] == "x" and manifest["argv"]
    assert artifact.file("data.txt").read_text() == "hello"
    assert artifact.input("train-run").path == parent.path


def test_failure_inside_the_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with write_artifact(tmp_path / "out", "masks") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_refuses_non_empty_output_unless_forced(tmp_path):
    make(tmp_path / "out")
    with pytest.raises(UsageError,
                       match=r"holds a previous masks \(\d+ files\); --force replaces it \(they are deleted\)"):
        make(tmp_path / "out", content="second")
    assert make(tmp_path / "out", content="second", force=True).file("data.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old copies left


def test_wrong_kind_names_the_producing_command(tmp_path):
    make(tmp_path / "pruned", kind="pruned-model")
    with pytest.raises(ArtifactError) as info:
        read_artifact(tmp_path / "pruned", "masks", needed_by="prune")
    assert "has kind 'pruned-model'; 'prune' needs 'masks' (the output of 'bgeprune finalize-masks')" in str(info.value)


def test_tampered_file_is_refused(tmp_path):
    artifact = make(tmp_path / "out")
    (tmp_path / "out" / "data.txt").write_text("HELLO")
    with pytest.raises(ArtifactError, match="does not match the sha256 recorded in manifest.json"):
        artifact.file("data.txt")


def test_missing_and_unlisted_files(tmp_path):
    artifact = make(tmp_path / "out")
    (tmp_path / "out" / "data.txt").unlink()
    with pytest.raises(ArtifactError, match="data.txt is missing"):
        artifact.file("data.txt")
    with pytest.raises(ArtifactError, match="not listed"):
        artifact.file("other.txt")


def test_newer_schema_corrupt_manifest_and_not_an_artifact(tmp_path):
    make(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({**manifest, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ArtifactError, match="newer than this bgeprune"):
        read_artifact(tmp_path / "out", "masks")
    (tmp_path / "out" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is corrupt"):
        read_artifact(tmp_path / "out", "masks")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json, so it is not a bgeprune artifact"):
        read_artifact(tmp_path / "plain", "masks")
    with pytest.raises(ArtifactError, match="does not exist"):
        read_artifact(tmp_path / "nowhere", "masks")


def test_run_directory_finds_the_stage_subdirectory(tmp_path):
    make(tmp_path / "run" / "masks")
    assert read_artifact(tmp_path / "run", "masks").path == tmp_path / "run" / "masks"


def test_changed_parent_is_detected(tmp_path):
    parent = make(tmp_path / "train", kind="train-run")
    child = make(tmp_path / "masks", inputs=[parent])
    make(tmp_path / "train", kind="train-run", content="rerun", force=True)
    with pytest.raises(ArtifactError, match="changed after"):
        child.input("train-run")
