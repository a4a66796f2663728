"""`--force` never destroys a stage's own input: an output that is, contains or lies inside what the stage
reads (or the artifacts that was made from) is refused with exit 2 and nothing touched, whatever
`--force` says; `--force` replaces only a previous output of the same kind. Real commands, and the
files that must survive are checked after each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.stages import export_hf, prune
from conftest import keep_only, make_run

runner = CliRunner()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def runs(tmp_path, builtin_cache) -> Path:
    """runs/x: train, masks and pruned; out/x: its export. Returns the tmp root."""
    run = make_run(tmp_path / "runs" / "x", "builtin:tiny-xlm-roberta", {"layer": keep_only(3, 0, 2)})
    prune.run(run / "masks")
    (run / "metrics.jsonl").write_text("{}\n")
    export_hf.run(run, tmp_path / "out" / "x")
    return tmp_path


def refused(root: Path, *args: str, needle: str) -> None:
    before = snapshot(root)
    old = os.getcwd()
    os.chdir(root)
    try:
        result = runner.invoke(app, list(args))
    finally:
        os.chdir(old)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split()), result.output
    assert snapshot(root) == before  # nothing written, moved or deleted


@pytest.mark.parametrize("args, needle", [
    (("export-hf", "runs/x", "runs/x", "--force"), "runs/x contains the pruned-model at"),
    (("export-hf", "runs/x", "runs", "--force"), "runs contains the pruned-model at"),
    (("export-hf", "runs/x", "runs/x/pruned/sub", "--force"), "runs/x/pruned/sub lies inside the pruned-model"),
    (("finalize-masks", "runs/x/train", "-o", "runs/x/train", "--force"), "runs/x/train is the train-run at"),
    (("prune", "runs/x/masks", "-o", "runs/x", "--force"), "runs/x contains the masks at"),
    (("prune", "runs/x/masks", "-o", "runs/x/masks", "--force"), "runs/x/masks is the masks at"),
    (("prune", "runs/x/masks", "-o", "runs/x/train", "--force"), "runs/x/train is the train-run at"),  # lineage
    (("export-hf", "runs/x", "runs/x/pruned/../masks", "--force"), "runs/x/pruned/../masks is the masks at"),
    (("verify", "out/x", "--report", "out/x/report", "--force"), "out/x/report lies inside"),
    (("bench", "out/x", "-o", "out/x", "--force"), "out/x is"),
])
def test_an_output_over_what_the_stage_reads_is_refused_even_with_force(runs, args, needle):
    refused(runs, *args, needle=needle)


def test_a_symlink_to_an_input_is_resolved_before_the_comparison(runs):
    (runs / "link").symlink_to(runs / "runs" / "x")
    refused(runs, "export-hf", "runs/x", "link", "--force", needle="link contains the pruned-model at")


def test_force_replaces_only_a_previous_output_of_the_same_kind(runs):
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("mine")
    refused(runs, "export-hf", "runs/x", "notes", "--force",
            needle="notes holds files that are not a bgeprune hf-model")
    refused(runs, "prune", "runs/x/masks", "-o", "out/x", "--force", needle="out/x holds a hf-model artifact")


def test_without_force_the_refusal_says_what_would_be_deleted(runs):
    refused(runs, "export-hf", "runs/x", "out/x", needle="out/x holds a previous hf-model (")
    refused(runs, "export-hf", "runs/x", "out/x", needle="--force replaces it (they are deleted)")
    old = os.getcwd()
    os.chdir(runs)
    try:
        result = runner.invoke(app, ["export-hf", "runs/x", "out/x", "--force"])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    assert (runs / "runs" / "x" / "pruned" / "manifest.json").is_file()


def test_exported_files_are_readable_as_the_umask_allows(runs):
    """safetensors writes its files 0600; a serving account could not read the export."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [runs / "out" / "x", *(runs / "out" / "x").rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o777 if path.is_dir() else 0o666) & ~mask, (path, oct(mode))


def test_an_output_that_is_a_symlink_is_written_where_it_points(runs, tmp_path):
    target = tmp_path / "elsewhere" / "export"
    target.parent.mkdir()
    (runs / "out" / "link").symlink_to(target, target_is_directory=True)
    old = os.getcwd()
    os.chdir(runs)
    try:
        assert runner.invoke(app, ["export-hf", "runs/x", "out/link"]).exit_code == 0
        assert runner.invoke(app, ["export-hf", "runs/x", "out/link", "--force"]).exit_code == 0
    finally:
        os.chdir(old)
    assert (runs / "out" / "link").is_symlink() and (target / "manifest.json").is_file()
    left = [p.name for p in [*(runs / "out").iterdir(), *target.parent.iterdir()]
            if ".old-" in p.name or ".tmp-" in p.name]
    assert not left  # no hidden copy of the link or of the old export stays behind
