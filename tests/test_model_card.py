"""The export's model card: front matter the Hub reads, numbers a user compares, code that runs as written,
and the warning that re-saving drops bge-m3's heads (which verify then catches)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer

from bgeprune_cli.models.card import hub_base_model
from bgeprune_cli.models.loading import resolve_base
from bgeprune_cli.stages import export_hf, prune, verify
from conftest import keep_only, make_run

MASKS = {"layer": keep_only(3, 0, 2), "heads": torch.stack([keep_only(4, 0, 3)] * 3),
         "hidden": keep_only(64, *range(32))}


@pytest.fixture(scope="module")
def m3_export(tmp_path_factory, builtin_cache) -> tuple[Path, Path]:
    """(the directory export-hf was run from, the export path as it was given: relative)."""
    root = tmp_path_factory.mktemp("card")
    base = root / "base"
    shutil.copytree(resolve_base("builtin:tiny-bge-m3"), base)
    (base / "README.md").write_text("---\nlicense: mit\nlanguage:\n- en\n- fr\ntags: [x]\n---\n# tiny\n")
    run = make_run(root / "run", str(base), MASKS)
    prune.run(run / "masks")
    cwd = Path.cwd()
    try:
        import os
        os.chdir(root)
        export_hf.run(run, Path("exports/m3"))
    finally:
        os.chdir(cwd)
    return root, Path("exports/m3")


def _card(root: Path, path: Path) -> tuple[dict, str]:
    text = (root / path / "README.md").read_text()
    front, body = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL).groups()
    return yaml.safe_load(front), body


def test_front_matter_has_what_the_hub_reads_and_copies_license_and_language(m3_export):
    front, _ = _card(*m3_export)
    assert front["pipeline_tag"] == "sentence-similarity" and front["library_name"] == "sentence-transformers"
    assert front["license"] == "mit" and front["language"] == ["en", "fr"]
    assert "base_model" not in front  # a local directory is nothing on the Hub
    assert "bgeprune" in front["tags"]


def test_base_model_is_a_hub_id_or_absent():
    assert hub_base_model("BAAI/bge-m3", Path("/nonexistent")) == "BAAI/bge-m3"
    assert hub_base_model("builtin:all-minilm-l6-v2", Path("/x")) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_base_model("builtin:tiny-bge-m3", Path("/x")) is None
    assert hub_base_model("/data/models/my-bge", Path("/x")) is None


def test_body_states_total_and_encoder_parameters_dimension_and_length(m3_export):
    root, path = m3_export
    _, body = _card(root, path)
    model = SentenceTransformer(str(root / path))
    total = sum(p.numel() for p in model.parameters()) + sum(
        t.numel() for f in ("colbert_linear.pt", "sparse_linear.pt")
        for t in torch.load(root / path / f, weights_only=True).values())
    assert f"| {total:,} (" in body  # total parameters of the export, heads included
    assert "parameters, encoder layers" in body and "hidden size = output dimension | 64 | 32 |" in body
    assert f"| max sequence length | {model.max_seq_length} |" in body
    assert "builtin" not in body.split("## Usage")[1]  # the snippets load the directory, not the base's name


def test_every_python_snippet_in_the_card_runs_as_written(m3_export):
    root, path = m3_export
    _, body = _card(root, path)
    blocks = re.findall(r"```python\n(.*?)```", body, re.DOTALL)
    assert len(blocks) == 5
    (root / "new_dir").mkdir(exist_ok=True)
    for block in blocks:
        if "FlagEmbedding" in block:  # FlagEmbedding needs transformers 4: tests/test_compat.py runs it
            assert f'BGEM3FlagModel("{path}"' in block
            continue
        proc = subprocess.run([sys.executable, "-c", block], cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (block, proc.stderr[-2000:])
    assert sorted(p.name for p in (root / "new_dir").iterdir()) == ["colbert_linear.pt", "sparse_linear.pt"]


def test_card_warns_that_resaving_drops_the_heads_and_verify_catches_it(m3_export, tmp_path):
    root, path = m3_export
    _, body = _card(root, path)
    assert "Re-saving drops the heads" in body
    resaved = tmp_path / "resaved"
    SentenceTransformer(str(root / path)).save_pretrained(str(resaved))
    assert not (resaved / "sparse_linear.pt").exists()  # what sentence-transformers does
    shutil.copy(root / path / "lineage.json", resaved)  # the record that says the model has heads
    result = verify.run(resaved)
    heads = next(c for c in result["checks"] if c["name"] == "m3-heads")
    assert not result["ok"] and heads["status"] == "fail"
    assert "SentenceTransformer.save_pretrained drops them" in heads["message"]


def test_the_card_names_streamed_training_data():
    """A run trained on [data.stream] has no file count: the card names the datasets (it once crashed here)."""
    from bgeprune_cli.models.card import _data_sentence

    assert _data_sentence({"files": 2, "items": 1234, "bytes": 9}) == "1,234 passages from 2 file(s)"
    one = {"dataset": "HuggingFaceFW/fineweb-edu", "name": "sample-10BT", "split": "train", "streaming": True}
    assert _data_sentence(one) == "streamed from `HuggingFaceFW/fineweb-edu` (sample-10BT)"
    mix = {"datasets": [{"dataset": "HuggingFaceFW/fineweb-2", "name": f"l{i}", "weight": 1.0} for i in range(10)],
           "streaming": True}
    assert _data_sentence(mix).endswith("(l7) and 2 more mixed by weight")


def test_a_matryoshka_export_records_its_widths_and_the_card_loads_one(tmp_path, builtin_cache):
    """Trained widths go into the manifest and the card; the card's snippet loads a width as written."""
    from bgeprune_cli.artifacts import read_artifact

    run = make_run(tmp_path / "run", "builtin:tiny-bge-m3", {"layer": keep_only(3, 0, 2)},
                   distill={"matryoshka_dims": [64, 32, 16]})
    prune.run(run / "masks")
    out = tmp_path / "out"
    export_hf.run(run, out)
    assert read_artifact(out, "hf-model").info["matryoshka_dims"] == [64, 32, 16]
    _, body = _card(tmp_path, Path("out"))
    widths = body.split("## Output widths")[1]
    assert "16 floats per text instead of 64" in widths and "--dims 32,16" in widths
    assert 'dense = out["dense_vecs"][:, :16]' in widths  # bge-m3 heads: FlagEmbedding too
    [block] = re.findall(r"```python\n(.*?)```", widths, re.DOTALL)
    proc = subprocess.run([sys.executable, "-c", block], cwd=out.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "(2, 16)" in proc.stdout, proc.stderr[-2000:]
