"""Shared fixtures: a per-session cache for builtin tiny models, and artifacts made directly.

Tests never touch the hub: every model is a builtin made locally (bgeprune_cli.models.builtins) or the
offline all-MiniLM-L6-v2 package (slow tests).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bgeprune_cli.artifacts import write_artifact, write_json
from bgeprune_cli.config import BaseDims, Recipe, recipe_sha256
from bgeprune_cli.filenames import GATES as GATES_FILE
from bgeprune_cli.filenames import MASKS as MASKS_FILE
from bgeprune_cli.filenames import STUDENT as STUDENT_FILE
from bgeprune_cli.filenames import VOCAB_SAMPLE
from bgeprune_cli.models.loading import read_config, resolve_base
from bgeprune_cli.pruning.masks import Layout, masks_summary
from bgeprune_cli.pruning.vocab import vocab_summary

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def builtin_cache(tmp_path_factory):
    cache = os.environ.get("BGEPRUNE_TEST_CACHE") or str(tmp_path_factory.getbasetemp().parent / "bgeprune-cache")
    os.environ["BGEPRUNE_CACHE"] = cache
    yield Path(cache)


@pytest.fixture(scope="session")
def xlmr_dir(builtin_cache) -> Path:
    return resolve_base("builtin:tiny-xlm-roberta")


@pytest.fixture(scope="session")
def bert_dir(builtin_cache) -> Path:
    return resolve_base("builtin:tiny-bert")


def make_run(run_dir: Path, base_model: str, masks: dict[str, torch.Tensor], target: dict | None = None,
             vocab: list[int] | None = None, sample: list[str] = (), student: dict | None = None,
             distill: dict | None = None) -> Path:
    """A train-run (gate scores that rank kept units first) and a masks artifact holding `masks`.

    `target` defaults to sparsity mode, which allows any (non-uniform) masks. `vocab` (kept token ids, e.g.
    from `corpus_vocab`) trims the vocabulary too, with `sample` as the corpus texts verify checks. `student`
    (a state dict of the base's shapes) is written as the run's student weights; `distill`, the recipe's
    [distill] section.
    """
    recipe = Recipe.model_validate({"base": {"model": base_model}, "distill": distill or {},
                                    "target": target or {"mode": "sparsity", "sparsity": 0.5}}).model_dump(mode="json")
    sha = recipe_sha256(recipe)
    dims = BaseDims.from_config(read_config(resolve_base(base_model)))
    gates = {k: v.float() * 2 - 1 for k, v in masks.items()}
    info = {"method": "test", "gate_kind": "log_alpha", "masks": sorted(masks),
            "base_dims": {"layers": dims.layers, "heads": dims.heads, "ffn": dims.ffn, "hidden": dims.hidden}}
    with write_artifact(run_dir / "train", "train-run", recipe=recipe, recipe_sha256=sha, info=info) as tmp:
        save_file({k: v.contiguous() for k, v in gates.items()}, str(tmp / GATES_FILE))
        if student is not None:
            save_file({k: v.contiguous() for k, v in student.items()}, str(tmp / STUDENT_FILE))
    from bgeprune_cli.artifacts import read_artifact

    train = read_artifact(run_dir / "train", "train-run")
    layout = Layout.from_masks(masks, dims, vocab)
    info = {"layout": layout.to_json()}
    if vocab is not None:
        info["vocab"] = vocab_summary(vocab, read_config(resolve_base(base_model))["vocab_size"], dims.hidden,
                                      corpus={"texts": len(sample)})
    with write_artifact(run_dir / "masks", "masks", recipe=recipe, recipe_sha256=sha, inputs=[train],
                        info=info) as tmp:
        save_file({k: v.to(torch.bool).contiguous() for k, v in masks.items()}, str(tmp / MASKS_FILE))
        write_json(tmp / "masks.json", masks_summary(masks, layout))
        if vocab is not None:
            write_json(tmp / VOCAB_SAMPLE, list(sample))
    return run_dir


def corpus_vocab(base_model: str, texts: list[str], min_count: int = 1) -> list[int]:
    """The kept ids for a corpus of `texts`, computed as finalize-masks does (without files)."""
    from bgeprune_cli.models.tokenizers.files import base_tokenizer_files
    from bgeprune_cli.pruning.vocab import select_vocabulary
    from bgeprune_cli.training.vocab_corpus import count_texts

    directory = resolve_base(base_model)
    files = base_tokenizer_files(directory, read_config(directory))
    counts, chars = count_texts(texts, files)
    return select_vocabulary(counts.max(axis=0), files.special, [], min_count, None, files.character_ids(chars))


def bool_mask(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def keep_only(length: int, *indices: int) -> torch.Tensor:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[list(indices)] = True
    return mask


# A short training run for tests about mechanics rather than convergence (`--set` overrides).
SHORT_TRAIN = ["train.steps=12", "train.recovery_steps=4", "train.checkpoint_every=4", "train.log_every=1",
               "train.target_warmup_steps=4"]


def train_until_crash(monkeypatch, loaded, run_dir: Path, step: int = 8) -> None:
    """Train until the step-`step` checkpoint is committed, then crash (an exception out of the loop)."""
    from bgeprune_cli.stages import train
    from bgeprune_cli.training import checkpoints

    real_save = checkpoints.save

    def save_then_crash(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if args[1] == step:
            raise RuntimeError("simulated crash")
        return path

    monkeypatch.setattr(checkpoints, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(loaded, run_dir=run_dir)
    monkeypatch.setattr(checkpoints, "save", real_save)


E5_PROMPTS = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
              "similarity_fn_name": "cosine"}


@pytest.fixture()
def prompted_base(tmp_path, builtin_cache) -> Path:
    """tiny BERT with multilingual-e5's prompts in its sentence-transformers config."""
    base = tmp_path / "base"
    shutil.copytree(resolve_base("builtin:tiny-bert"), base)
    (base / "config_sentence_transformers.json").write_text(json.dumps(E5_PROMPTS))
    return base


class Recorder:
    """A BenchModel stand-in that records the texts it is asked to encode (dense vectors from a real model)."""

    def __init__(self, directory: Path, hidden: int = 64):
        from bgeprune_cli.bench.models import load_bench_model

        self.real = load_bench_model(str(directory))
        self.prompts, self.pooling, self.heads, self.hidden = self.real.prompts, self.real.pooling, None, hidden
        self.texts: list[str] = []

    def encode(self, texts, max_length, batch_size, with_heads, progress=None):
        self.texts += texts
        return self.real.encode(texts, max_length, batch_size, with_heads, progress)


@pytest.fixture()
def me5_small() -> Path:
    """multilingual-e5-small built offline (benchmarks/me5_small.py), or a skip that says what to install."""
    from me5_small import MissingFixture, me5_small_dir  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

    try:
        return me5_small_dir()
    except MissingFixture as exc:
        pytest.skip(str(exc))
