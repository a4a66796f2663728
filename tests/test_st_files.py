"""sentence-transformers files: both Pooling config formats read, exports written in the format every
release loads, with the real dimension."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from bgeprune_cli.errors import BadModelFiles
from bgeprune_cli.models.loading import resolve_base
from bgeprune_cli.models.st_files import read_pooling
from bgeprune_cli.stages import export_hf, prune, verify
from conftest import keep_only, make_run

# Pooling configs as sentence-transformers writes them: <= 5.6 (legacy keys), and 5.7 / 6.x.
LEGACY = {"word_embedding_dimension": 64, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
          "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
CURRENT = {"embedding_dimension": 64, "pooling_mode": "mean", "include_prompt": True}


def _base_with_pooling(tmp_path: Path, config: dict) -> Path:
    base = tmp_path / "base"
    shutil.copytree(resolve_base("builtin:tiny-bert"), base)
    (base / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return base


@pytest.mark.parametrize("config,mode", [(LEGACY, "mean"), (CURRENT, "mean"),
                                         ({**CURRENT, "pooling_mode": "cls"}, "cls"),
                                         ({**CURRENT, "pooling_mode": ["cls"]}, "cls")])
def test_both_pooling_formats_are_read(tmp_path, builtin_cache, config, mode):
    assert read_pooling(_base_with_pooling(tmp_path, config)).mode == mode


def test_unsupported_pooling_names_the_file(tmp_path, builtin_cache):
    base = _base_with_pooling(tmp_path, {**CURRENT, "pooling_mode": "lasttoken"})
    with pytest.raises(BadModelFiles, match=r"1_Pooling/config.json: pooling 'lasttoken' is not supported"):
        read_pooling(base)


def test_a_base_saved_by_current_sentence_transformers_prunes_and_exports(tmp_path, builtin_cache):
    base = _base_with_pooling(tmp_path, CURRENT)
    masks = {"layer": keep_only(3, 0, 2), "hidden": keep_only(64, *range(0, 64, 2)),
             "heads": torch.stack([keep_only(4, 0, 2)] * 3)}
    run = make_run(tmp_path / "run", str(base), masks)
    prune.run(run / "masks")
    export_hf.run(run, tmp_path / "out", fmt="stock")
    written = json.loads((tmp_path / "out" / "1_Pooling" / "config.json").read_text())
    assert written["word_embedding_dimension"] == 32 and written["pooling_mode_mean_tokens"] is True
    assert written["pooling_mode_cls_token"] is False and written["include_prompt"] is True
    assert "pooling_mode" not in written and "embedding_dimension" not in written
    model = SentenceTransformer(str(tmp_path / "out"))
    assert model.encode(["a pruned model"]).shape == (1, 32)
    result = verify.run(tmp_path / "out")
    assert result["ok"], [c for c in result["checks"] if c["status"] == "fail"]
