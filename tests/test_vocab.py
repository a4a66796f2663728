"""Vocabulary trimming: choosing the kept ids, the [vocab] recipe section, `check`'s dry run, the recipe's
header command, bench's coverage, and every bad input with its message and exit code (nothing written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.errors import DataError, RecipeError
from bgeprune_cli.models.builtins import materialize
from bgeprune_cli.models.tokenizers.vocab_map import VocabMap
from bgeprune_cli.pruning.vocab import select_vocabulary
from bgeprune_cli.stages import bench
from test_vocab_pipeline import CORPUS, TEXTS

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- choosing the kept ids


def test_select_keeps_specials_keep_and_what_the_corpus_produced_in_id_order():
    counts = np.array([0, 0, 5, 0, 2, 0, 1, 9])
    assert select_vocabulary(counts, {0, 1}, [5], 1, None) == [0, 1, 2, 4, 5, 6, 7]
    assert select_vocabulary(counts, {0, 1}, [], 2, None) == [0, 1, 2, 4, 7]  # min_count
    assert select_vocabulary(counts, {0, 1}, [], 1, 4) == [0, 1, 2, 7]  # the two most frequent
    assert select_vocabulary(np.array([0, 0, 3, 3, 3]), {0}, [], 1, 3) == [0, 2, 3]  # ties to the lower id
    assert select_vocabulary(counts, {0}, [], 100, None, characters={6}) == [0, 6]  # characters always


def test_vocab_map_translates_ids_both_ways_keeping_shape_and_dtype():
    import torch

    vmap = VocabMap([0, 2, 5, 9], base_size=10)
    new = torch.tensor([[3, 0], [1, 2]], dtype=torch.int32)
    assert vmap.ids_to_base(new).tolist() == [[9, 0], [2, 5]] and vmap.ids_to_base(new).dtype == torch.int32
    assert torch.equal(vmap.to_new_ids(vmap.ids_to_base(new).long(), unk=0), new.long())
    assert vmap.to_new_ids(torch.tensor([1, 9]), unk=0).tolist() == [0, 3]  # a dropped id becomes unk


def test_select_refuses_a_corpus_that_keeps_nothing_and_a_cap_below_the_specials():
    with pytest.raises(DataError, match="keeps no token"):
        select_vocabulary(np.array([4, 0, 0]), {0}, [], 1, None)  # only special tokens produced
    with pytest.raises(RecipeError, match="fewer than the 3 special"):
        select_vocabulary(np.array([4, 4, 4, 4]), {0, 1, 2}, [], 1, 2)


# ---------------------------------------------------------------- recipes and the CLI


def _recipe(tmp_path, base="builtin:tiny-xlm-roberta", vocab=f'corpus = ["{CORPUS}"]', target="") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(f'[base]\nmodel = "{base}"\n{target}\n[vocab]\n{vocab}\n')
    return path


def test_check_is_a_dry_run_reporting_tokens_kept_and_parameters(tmp_path):
    result = invoke("check", _recipe(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 16 < report["vocab"]["kept"] < report["vocab"]["base"] == 508
    assert report["vocab"]["corpus"]["texts"] == len(TEXTS)
    assert report["params"]["after"] < report["params"]["base"]
    assert report["params"]["base"] - report["params"]["after"] == (508 - report["vocab"]["kept"]) * 64


def test_a_target_equal_to_the_base_needs_a_vocab_section(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[base]\nmodel = "builtin:tiny-bert"\n[target]\nlayers = 3\n')
    result = invoke("check", path)
    assert result.exit_code == 2 and "add a [vocab] section" in result.stderr
    path.write_text('[base]\nmodel = "builtin:tiny-bert"\n')
    result = invoke("check", path)
    assert result.exit_code == 2 and "or a [vocab] section" in result.stderr


def test_train_refuses_a_vocab_only_recipe_and_names_the_command(tmp_path):
    result = invoke("train", _recipe(tmp_path), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and f"bgeprune magnitude {tmp_path / 'r.toml'}" in result.stderr
    assert not (tmp_path / "run" / "train").exists()


def test_train_with_a_vocab_section_then_finalize_masks_trims(tmp_path):
    """Encoder pruning learned by train, tokens chosen by finalize-masks from the same recipe."""
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import recipe_base_dims
    from bgeprune_cli.stages import export_hf, finalize_masks, prune, train

    path = _recipe(tmp_path, base="builtin:tiny-bert",
                   target="[target]\nlayers = 2\n[data]\ntrain = [\"builtin:probe\"]\n"
                   "max_length = 32\n[train]\nbatch_size = 4")
    steps = ["train.steps=4", "train.recovery_steps=2", "train.target_warmup_steps=2", "train.checkpoint_every=100"]
    train.run(load_recipe(path, steps, base_dims=recipe_base_dims), run_dir=tmp_path / "run")
    masks = finalize_masks.run(tmp_path / "run" / "train")
    assert masks["sizes"]["layers"] == 2 and masks["vocab"]["kept"] < masks["vocab"]["base"]
    prune.run(tmp_path / "run" / "masks")
    export_hf.run(tmp_path / "run" / "pruned", tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["vocab_size"]) == (2, masks["vocab"]["kept"])


def test_a_keep_token_not_in_the_vocabulary_exits_2_with_its_line(tmp_path):
    path = _recipe(tmp_path, vocab=f'corpus = ["{CORPUS}"]\nkeep = ["meeting", "<mask>"]')
    for command in ("check", "magnitude"):
        result = (invoke(command, path, "--run-dir", tmp_path / "run") if command == "magnitude"
                  else invoke(command, path))
        assert result.exit_code == 2, result.output
        assert f"{path}:6: vocab.keep[0]: 'meeting' is not a token" in result.stderr
        assert "did you mean '▁meeting'?" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_corpus_that_keeps_no_token_exits_2_and_writes_no_masks(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("A short text.\nAnother one.\n")  # no token reaches min_count
    path = _recipe(tmp_path, vocab=f'corpus = ["{corpus}"]\nmin_count = 1000\ncharacters = false')
    result = invoke("check", path)
    assert result.exit_code == 2 and "the corpus keeps no token" in result.stderr, result.output
    assert invoke("magnitude", path, "--run-dir", tmp_path / "run").exit_code == 0
    result = invoke("finalize-masks", tmp_path / "run" / "train")
    assert result.exit_code == 2 and "keeps no token" in result.stderr
    assert not (tmp_path / "run" / "masks").exists()


def test_a_base_without_a_tokenizer_trimming_understands_exits_3(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(materialize("tiny-xlm-roberta"), base)
    (base / "tokenizer.json").unlink()  # sentencepiece.bpe.model alone: no fast tokenizer to rewrite from
    path = _recipe(tmp_path, base=str(base))
    for args in (("check", path), ("magnitude", path, "--run-dir", tmp_path / "run")):
        result = invoke(*args)
        assert result.exit_code == 3 and "has no tokenizer.json" in result.stderr, result.output
    assert not (tmp_path / "run").exists()


HEADER = (ROOT / "recipes" / "vocab-smoke.toml").read_text().splitlines()[0].removeprefix("# ")


def test_vocab_smoke_recipe_header_commands_run(tmp_path, monkeypatch):
    """The header's commands, each through the CLI in this process (the shell, verbatim: the slow test below)."""
    monkeypatch.chdir(tmp_path)
    for command in HEADER.split(" && "):
        words = command.split()
        assert words[0] == "bgeprune"
        result = invoke(*[str(ROOT / w) if w.startswith("recipes/") else w for w in words[1:]])
        assert result.exit_code == 0, f"{command}: {result.output[-2000:]}"
    assert "verified" in result.stdout
    out = tmp_path / "out" / "vocab-smoke"
    assert json.loads((out / "lineage.json").read_text())["vocab_map"] == "vocab_map.json"
    assert "tokenizes into smaller pieces or `<unk>`" in (out / "README.md").read_text()


@pytest.mark.slow
def test_vocab_smoke_recipe_header_command_runs_in_a_shell(tmp_path):
    recipe = ROOT / "recipes" / "vocab-smoke.toml"
    command = HEADER.replace("recipes/vocab-smoke.toml", str(recipe))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified" in proc.stdout
    out = tmp_path / "out" / "vocab-smoke"
    assert json.loads((out / "lineage.json").read_text())["vocab_map"] == "vocab_map.json"
    assert "tokenizes into smaller pieces or `<unk>`" in (out / "README.md").read_text()


# ---------------------------------------------------------------- bench


def test_bench_reports_vocabulary_size_and_coverage_per_language(tmp_path, builtin_cache):
    from test_vocab_pipeline import build

    run = build(tmp_path, "xlmr")
    bitext = tmp_path / "bitext"
    bitext.mkdir()
    (bitext / "fr.jsonl").write_text("\n".join(json.dumps({"en": e, "xx": x}) for e, x in zip(TEXTS[:3], TEXTS[11:14])))
    (bitext / "el.jsonl").write_text("\n".join(json.dumps({"en": e, "xx": x}) for e, x in
                                               zip(TEXTS[:2], ["Η θάλασσα είναι ήρεμη σήμερα.", "Η γάτα κοιμάται."])))
    report = bench.run(str(run / "out"), compare="builtin:tiny-xlm-roberta", out=tmp_path / "bench", force=False,
                       options=bench.BenchOptions(bitext=[bitext], speed=False, memory=False))
    assert report["models"]["model"]["vocab"] < report["models"]["base"]["vocab"] == 508
    assert report["size_ratio"]["vocab"] < 1 and report["size_ratio"]["file_bytes"] < 1
    coverage = report["coverage"]
    assert coverage["bitext fr"]["exact"] == 1.0 and coverage["bitext en (every file's English side)"]["exact"] == 1.0
    assert coverage["bitext el"]["exact"] == 0.0 and coverage["bitext el"]["tokens_kept"] < 0.5


def test_a_streamed_corpus_keeps_what_the_same_texts_in_files_keep(tmp_path, builtin_cache):
    """vocab.stream_texts: the first N texts of data.stream, in stream order, counted like corpus files."""
    pytest.importorskip("datasets")
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import recipe_base_dims
    from bgeprune_cli.models.recipe_base import RecipeBase
    from bgeprune_cli.training.vocab_corpus import plan_vocabulary

    lines = [line for line in (ROOT / "recipes" / "corpora" / "smoke-en-de-fr.txt").read_text().splitlines() if line]
    first = tmp_path / "first.txt"
    first.write_text("\n".join(lines[:7]) + "\n")
    (tmp_path / "all.jsonl").write_text("".join(json.dumps({"body": line}) + "\n" for line in lines))
    head = '[base]\nmodel = "builtin:tiny-bge-m3"\n'
    files = tmp_path / "files.toml"
    files.write_text(head + '[vocab]\ncorpus = ["./first.txt"]\n')
    streamed = tmp_path / "streamed.toml"
    streamed.write_text(head + '[data.stream]\ndataset = "json"\ndata_files = ["./all.jsonl"]\ntext_field = "body"\n'
                        '[vocab]\nstream_texts = 7\n')
    plans = []
    for recipe in (files, streamed):
        loaded = load_recipe(recipe, base_dims=recipe_base_dims).recipe
        ctx = RecipeBase(loaded)
        plans.append(plan_vocabulary(loaded, ctx.base_dir, ctx.base_config, progress=False))
    assert plans[0].kept == plans[1].kept and plans[1].corpus["texts"] == 7
    assert plans[1].corpus["files"] == ["data.stream: json"] and plans[1].sample
    streamed.write_text(head + '[vocab]\nstream_texts = 7\n')
    with pytest.raises(RecipeError, match="vocab.stream_texts: counts texts of data.stream"):
        load_recipe(streamed)
    files.write_text(head + '[vocab]\nmin_count = 1\n')
    with pytest.raises(RecipeError, match="vocab.corpus: name the trimming corpus once"):
        load_recipe(files)


def test_the_word_start_piece_is_kept_like_a_special_token(builtin_cache):
    """With vocab.characters = false a corpus may never produce the bare "▁"; dropping it made
    sentencepiece.bpe.model fuse unknown runs across words while tokenizer.json split them, and verify
    failed without saying why. It is kept, as special tokens are."""
    from bgeprune_cli.models.loading import read_config, resolve_base
    from bgeprune_cli.models.tokenizers.files import WORD_START, base_tokenizer_files

    for name in ("builtin:tiny-xlm-roberta", "builtin:tiny-bge-m3"):
        files = base_tokenizer_files(resolve_base(name), read_config(resolve_base(name)))
        assert files.ids[WORD_START] in files.special
