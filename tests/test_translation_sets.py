"""`[[data.translation_sets]]`: translation pairs from a Hugging Face dataset (a local builder here: no hub),
written once as JSONL and trained on like data.translations; bad columns exit 2, an unreachable hub 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bgeprune_cli.config import TranslationSet
from bgeprune_cli.stages import train
from bgeprune_cli.training.translation_sets import cached_path, materialize
from test_translations import PAIRS, recipe_with

ROOT = Path(__file__).resolve().parents[1]


def write_columns(path: Path) -> Path:
    rows = [{"english": en, "non_english": xx} for en, xx in PAIRS] + [{"english": "", "non_english": "leer"}]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def test_a_set_is_written_once_with_the_recipes_fields_skipping_empty_pairs_up_to_its_limit(tmp_path):
    source = TranslationSet(dataset="json", data_files=[str(write_columns(tmp_path / "talks.jsonl"))])
    path, count = materialize(source, "data.translation_sets[0]", ("src", "tgt"))
    assert count == len(PAIRS)  # the pair with an empty English side is dropped
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"src": en, "tgt": xx} for en, xx in PAIRS]
    written = path.stat().st_mtime_ns
    assert materialize(source, "data.translation_sets[0]", ("src", "tgt")) == (path, len(PAIRS))
    assert path.stat().st_mtime_ns == written  # reused, not written again
    limited, count = materialize(source.model_copy(update={"limit": 2}), "k", ("src", "tgt"))
    assert limited != path and count == 2 and len(limited.read_text().splitlines()) == 2


def test_training_draws_translation_pairs_from_a_set(tmp_path):
    data = write_columns(tmp_path / "talks.jsonl")
    loaded = recipe_with(tmp_path, f'translation_sets = [{{ dataset = "json", data_files = ["{data}"] }}]')
    result = train.run(loaded, run_dir=tmp_path / "run", device="cpu")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["terms"]["translation"] > 0 for r in records)
    assert result["data_summary"]["translations"]["items"] == len(PAIRS)


def _check(recipe: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "BGEPRUNE_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "bgeprune_cli", "check", str(recipe)], capture_output=True,
                          text=True, cwd=ROOT, env=env)


def test_wrong_columns_exit_2_and_an_unreachable_hub_exits_4_naming_the_set(tmp_path, builtin_cache):
    data = write_columns(tmp_path / "talks.jsonl")
    bad = recipe_with(tmp_path, f'translation_sets = [{{ dataset = "json", data_files = ["{data}"], '
                                f'translation_field = "german" }}]').path
    out = _check(bad, builtin_cache)
    assert out.returncode == 2, out.stderr
    message = " ".join(out.stderr.split())
    assert "data.translation_sets[0]" in message and "no column 'german' (its columns: english, non_english)" in message
    (tmp_path / "hub").mkdir()
    hub = recipe_with(tmp_path / "hub", 'translation_sets = [\n'
                      '  { dataset = "sentence-transformers/parallel-sentences-tatoeba", name = "en-de" },\n'
                      '  { dataset = "sentence-transformers/parallel-sentences-tatoeba", name = "en-fr" }]').path
    out = _check(hub, builtin_cache)
    assert out.returncode == 4, out.stderr
    message = " ".join(out.stderr.split())
    assert "HF_HUB_OFFLINE is set" in message and "data.translation_sets[1]" in message and "not tried" in message
    tatoeba = TranslationSet(dataset="sentence-transformers/parallel-sentences-tatoeba", name="en-de")
    assert not cached_path(tatoeba, ("en", "xx")).exists()  # nothing written for a set that was not read


def test_a_set_without_pairs_a_full_cache_and_a_full_hub_cache_have_their_own_errors(tmp_path, monkeypatch):
    import errno

    import pytest

    from bgeprune_cli.errors import DataError, EnvironmentProblem
    from bgeprune_cli.training import translation_sets

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"english": " ", "non_english": "leer"}) + "\n")
    source = TranslationSet(dataset="json", data_files=[str(empty)])
    with pytest.raises(DataError, match=r"k: json \[train\] has no pair with text in both 'english' and 'non_english'"):
        materialize(source, "k", ("en", "xx"))
    assert not cached_path(source, ("en", "xx")).exists()  # nothing half-written

    data = TranslationSet(dataset="json", data_files=[str(write_columns(tmp_path / "talks.jsonl"))])

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(translation_sets, "atomic_file", disk_full)
    with pytest.raises(EnvironmentProblem, match=r"k: writing .*No space left on device; free some space") as caught:
        materialize(data, "k", ("en", "xx"))
    assert caught.value.exit_code == 4
    monkeypatch.undo()

    import datasets

    def hub_cache_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets, "load_dataset", hub_cache_full)
    full = r"k: reading json \[train\], first 3 into datasets' cache failed: No space left on device; free some space"
    with pytest.raises(EnvironmentProblem, match=full):
        materialize(data.model_copy(update={"limit": 3}), "k", ("en", "xx"))
