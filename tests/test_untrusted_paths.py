"""Paths read from files we did not write (manifests handed to us, a base's modules.json) stay inside
their directory: nothing outside is opened, hashed or written, and the refusal says why (exit 3)."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgeprune_cli.artifacts import read_artifact, unsafe_member_reason
from bgeprune_cli.cli import app
from bgeprune_cli.errors import ArtifactError
from bgeprune_cli.models.loading import resolve_base
from bgeprune_cli.stages import export_hf, prune
from conftest import keep_only, make_run

runner = CliRunner()


@pytest.fixture()
def export(tmp_path, builtin_cache) -> Path:
    masks = {"layer": keep_only(3, 0, 2)}  # a stock shape: export-hf takes it as is
    run = make_run(tmp_path / "run", "builtin:tiny-xlm-roberta", masks)
    prune.run(run / "masks")
    export_hf.run(run, tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture()
def opened(monkeypatch) -> list[str]:
    """Every path this process opens from now on (builtins.open, io.open and os.open)."""
    seen: list[str] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def record(path):
        if isinstance(path, (str, os.PathLike)):
            seen.append(os.path.realpath(path))

    def patched_open(file, *args, **kwargs):
        record(file)
        return real_open(file, *args, **kwargs)

    def patched_io_open(file, *args, **kwargs):
        record(file)
        return real_io_open(file, *args, **kwargs)

    def patched_os_open(path, *args, **kwargs):
        record(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", patched_open)
    monkeypatch.setattr(io, "open", patched_io_open)
    monkeypatch.setattr(os, "open", patched_os_open)
    return seen


def _sentinel(tmp_path: Path) -> tuple[Path, dict]:
    sentinel = tmp_path / "outside-secret.txt"
    sentinel.write_text("not part of any artifact")
    data = sentinel.read_bytes()
    return sentinel, {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_verify_refuses_a_manifest_entry_outside_the_artifact_without_opening_it(tmp_path, export, opened, how):
    sentinel, entry = _sentinel(tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    path = {"dotdot": "../outside-secret.txt", "absolute": str(sentinel), "symlink": "link.txt"}[how]
    if how == "symlink":
        (export / "link.txt").symlink_to(sentinel)
    manifest["files"].append({"path": path, **entry})
    (export / "manifest.json").write_text(json.dumps(manifest))
    opened.clear()
    result = runner.invoke(app, ["verify", str(export)])
    assert result.exit_code == 3, result.output
    assert repr(path) in result.stderr and "tampered" in result.stderr
    assert str(sentinel.resolve()) not in opened


def test_every_reader_refuses_such_a_manifest(tmp_path, builtin_cache):
    run = make_run(tmp_path / "run", "builtin:tiny-xlm-roberta", {"layer": keep_only(3, 0, 1)})
    manifest_path = run / "masks" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["path"] = "../../../../etc/passwd"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="climbs out"):
        read_artifact(run / "masks", "masks")
    result = runner.invoke(app, ["prune", str(run / "masks")])
    assert result.exit_code == 3 and "etc/passwd" in result.stderr


def test_unsafe_member_reasons(tmp_path):
    assert unsafe_member_reason(tmp_path, "a/b.txt") is None
    for bad in ("", "/etc/passwd", "../x", "a/../../x", "a\\b", "C:/x", None, 3):
        assert unsafe_member_reason(tmp_path, bad), bad


def test_export_refuses_a_base_modules_json_that_points_outside(tmp_path, builtin_cache):
    base = tmp_path / "base"
    shutil.copytree(resolve_base("builtin:tiny-xlm-roberta"), base)
    run = make_run(tmp_path / "run", str(base), {"layer": keep_only(3, 0, 2)})
    prune.run(run / "masks")
    # After pruning, the base's modules.json is edited to point its Pooling module outside (a hostile repo).
    evil = tmp_path / "evilpool"
    evil.mkdir()
    shutil.copy(base / "1_Pooling" / "config.json", evil / "config.json")
    modules = json.loads((base / "modules.json").read_text())
    modules[1]["path"] = "../evilpool"
    (base / "modules.json").write_text(json.dumps(modules))
    out = tmp_path / "exports" / "out"
    result = runner.invoke(app, ["export-hf", str(run), str(out)])
    assert result.exit_code == 3, result.output
    assert "modules.json" in result.stderr and "[1].path '../evilpool'" in result.stderr
    assert not out.exists() and not (tmp_path / "exports" / "evilpool").exists()
    assert sorted(p.name for p in evil.iterdir()) == ["config.json"]


def test_verify_refuses_an_export_whose_modules_json_points_outside(tmp_path, export):
    modules = json.loads((export / "modules.json").read_text())
    modules[1]["path"] = "/etc"
    (export / "modules.json").write_text(json.dumps(modules))
    result = runner.invoke(app, ["verify", str(export)])
    assert result.exit_code == 3 and "is an absolute path" in result.stderr
