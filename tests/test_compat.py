"""The drop-in promise on the stack FlagEmbedding users run: transformers 4.57, sentence-transformers 5.7
and FlagEmbedding 1.4.2 (which does not import under transformers 5), in a second environment.

Tiny XLM-R, BERT and bge-m3 exports, pruned on layers, heads, FFN and hidden (stock and padded), some
with a trimmed vocabulary too (rewritten tokenizer files), are built here; tests/compat/stack_outputs.py
loads all of them in the compat Python in one process, and the tests compare what it got with what this
environment gets: a strict AutoModel load, tokenizer ids (the fast tokenizer from tokenizer.json and the
slow one from sentencepiece.bpe.model or vocab.txt), last_hidden_state, SentenceTransformer embeddings
and, for bge-m3, FlagEmbedding's three outputs and compute_score against bgeprune's M3Encoder.

The compat Python comes from `.ci/compat-env` (docs/testing.md: Compatibility tests); `.ci/run` sets
BGEPRUNE_COMPAT_PYTHON. Without it (or the older name BGEPRUNE_FLAGEMBEDDING_PYTHON) every test skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from bgeprune_cli.config import BaseDims
from bgeprune_cli.m3_encoder import M3Encoder
from bgeprune_cli.models.loading import read_config, resolve_base
from bgeprune_cli.models.probe import probe_texts
from bgeprune_cli.pruning.masks import Layout
from bgeprune_cli.stages import export_hf, prune
from conftest import corpus_vocab, keep_only, make_run
from test_parity import cases, every_other
from test_vocab_pipeline import TEXTS as CORPUS

ATOL = 1e-5
MAX_LENGTH = 64
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "compat" / "stack_outputs.py"
PROBE = probe_texts()
# The probe (21 languages) plus what tokenizers are likeliest to disagree on: a text past both the 64
# tokens used here and sentence-transformers' 128, odd whitespace, case, accents, symbols, an emoji.
TEXTS = PROBE + [" ".join(PROBE[:12]), "  Leading,   doubled\tand trailing   spaces \n",
                 "ÜBER naïve CAFÉ — “quoted” ½ 🚀 ﬁn", "x"]
COMPAT_PYTHON = os.environ.get("BGEPRUNE_COMPAT_PYTHON") or os.environ.get("BGEPRUNE_FLAGEMBEDDING_PYTHON")

pytestmark = pytest.mark.skipif(
    not COMPAT_PYTHON,
    reason="needs a Python with transformers 4.57, sentence-transformers 5.7 and FlagEmbedding 1.4.2: "
           "export BGEPRUNE_COMPAT_PYTHON=$(.ci/compat-env)  (docs/testing.md: Compatibility tests)")


def _stock_case(dims: BaseDims, seed: int) -> dict[str, torch.Tensor]:
    """Every axis pruned, still a stock shape: one layer dropped, 2 heads and a third of the FFN in each
    kept layer (different units per layer), hidden = 2 heads' worth of scattered dimensions."""
    L, H, F = dims.layers, dims.heads, dims.ffn
    return {"layer": keep_only(L, *[i for i in range(L) if i != 1]),
            "heads": torch.stack([every_other(H, 2, offset=seed + i) for i in range(L)]),
            "ffn": torch.stack([every_other(F, F // 3, offset=seed + 10 + i) for i in range(L)]),
            "hidden": every_other(dims.hidden, 2 * dims.head_dim, offset=seed + 20)}


# name: (base, masks, bge-m3 heads, vocabulary trimmed to the English/German/French corpus). "combined" prunes
# every axis with a different FFN width per layer, so it exports zero-padded to a stock shape.
EXPORTS = {
    "xlmr-stock": ("builtin:tiny-xlm-roberta", lambda dims: _stock_case(dims, 0), False, False),
    "bert-padded": ("builtin:tiny-bert", lambda dims: cases(dims)["combined"], False, False),
    "m3-stock": ("builtin:tiny-bge-m3", lambda dims: _stock_case(dims, 3), True, False),
    "m3-padded": ("builtin:tiny-bge-m3", lambda dims: cases(dims)["combined"], True, False),
    "xlmr-vocab": ("builtin:tiny-xlm-roberta", lambda dims: _stock_case(dims, 5), False, True),
    "bert-vocab": ("builtin:tiny-bert", lambda dims: cases(dims)["combined"], False, True),
    "m3-vocab": ("builtin:tiny-bge-m3", lambda dims: _stock_case(dims, 7), True, True),
}
M3_EXPORTS = [name for name, (_, _, m3, _) in EXPORTS.items() if m3]


def _export(root: Path, name: str) -> Path:
    base, make_masks, _, trimmed = EXPORTS[name]
    dims = BaseDims.from_config(read_config(resolve_base(base)))
    masks = make_masks(dims)
    layout = Layout.from_masks(masks, dims)
    assert len(layout.layers) < dims.layers and len(layout.hidden) < dims.hidden
    assert layout.stock == (name.endswith("stock") or name in ("xlmr-vocab", "m3-vocab"))
    vocab = corpus_vocab(base, CORPUS) if trimmed else None
    run = make_run(root / name / "run", base, masks, vocab=vocab, sample=CORPUS)
    prune.run(run / "masks")
    out = root / name / "out"
    export_hf.run(run / "pruned", out, fmt="stock" if layout.stock else "padded")
    return out


def _build(root: Path) -> None:
    exports = {name: _export(root, name) for name in EXPORTS}
    job = {"texts": TEXTS, "max_length": MAX_LENGTH,
           "exports": {name: {"dir": str(path), "m3": EXPORTS[name][2]} for name, path in exports.items()}}
    (root / "job.json").write_text(json.dumps(job))
    (root / "theirs").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([COMPAT_PYTHON, str(SCRIPT), str(root / "job.json"), str(root / "theirs")],
                          capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT.name} failed in {COMPAT_PYTHON} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    (root / "done").touch()


@pytest.fixture(scope="session")
def compat(tmp_path_factory, builtin_cache) -> dict:
    """Exports and the compat Python's results, made once per test session (under xdist, by whichever
    worker gets here first; the others wait for it and read its files)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "compat"
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "done").exists():
            if any(root.iterdir()):  # another worker started and failed: its error says why
                pytest.fail(f"building {root} failed in another xdist worker (see its error)")
            _build(root)
    return {"root": root, "results": json.loads((root / "theirs" / "results.json").read_text())}


def _theirs(compat: dict, name: str) -> tuple[dict, dict]:
    result = compat["results"]["exports"][name]
    path = compat["root"] / "theirs" / f"{name}.safetensors"
    return result, load_file(str(path))


def _no_error(result: dict, check: str) -> None:
    assert check not in result["errors"], f"{check} raised in the compat environment:\n{result['errors'][check]}"


def _dir(compat: dict, name: str) -> Path:
    return compat["root"] / name / "out"


def test_the_compat_python_is_the_older_stack(compat):
    versions = compat["results"]["versions"]
    assert versions["transformers"].startswith("4."), versions
    assert versions["sentence-transformers"].startswith("5."), versions
    assert versions["FlagEmbedding"].startswith("1.4"), versions


@pytest.mark.parametrize("name", EXPORTS)
def test_automodel_loads_the_export_strictly(compat, name):
    result, _ = _theirs(compat, name)
    _no_error(result, "automodel")
    assert result["model_class"] == read_config(_dir(compat, name))["architectures"][0]
    info = result["loading_info"]
    assert set(info) >= {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}, info
    assert not any(info.values()), info


@pytest.mark.parametrize("name", EXPORTS)
def test_tokenizer_ids_equal_ours(compat, name):
    result, _ = _theirs(compat, name)
    _no_error(result, "tokenizer")
    ours = AutoTokenizer.from_pretrained(_dir(compat, name))(TEXTS, truncation=True, max_length=MAX_LENGTH)
    assert any(len(ids) == MAX_LENGTH for ids in ours["input_ids"])  # truncation is exercised too
    pairs = zip(TEXTS, ours["input_ids"], result["input_ids"], strict=True)
    differ = {text: {"ours": mine, "theirs": theirs} for text, mine, theirs in pairs if mine != theirs}
    assert not differ, f"{result['tokenizer_class']} tokenizes {len(differ)} texts differently: {differ}"


@pytest.mark.parametrize("name", [n for n in EXPORTS if not n.startswith("bert")] + ["bert-padded", "bert-vocab"])
def test_slow_tokenizer_from_sentencepiece_or_vocab_txt_gives_the_same_ids(compat, name):
    """transformers 4's slow tokenizer reads the other tokenizer file (sentencepiece.bpe.model through the
    SentencePiece library, or vocab.txt): it must agree with tokenizer.json, trimmed or not."""
    result, _ = _theirs(compat, name)
    _no_error(result, "slow_tokenizer")
    expected = "XLMRobertaTokenizer" if (_dir(compat, name) / "sentencepiece.bpe.model").is_file() else "BertTokenizer"
    assert result["slow_tokenizer_class"] == expected
    pairs = zip(TEXTS, result["slow_input_ids"], result["input_ids"], strict=True)
    differ = {text: {"slow": slow, "fast": fast} for text, slow, fast in pairs if slow != fast}
    assert not differ, f"the slow tokenizer tokenizes {len(differ)} texts differently: {differ}"


@pytest.mark.parametrize("name", [n for n in EXPORTS if EXPORTS[n][3]])
def test_trimmed_vocabulary_ids_map_back_to_the_base_in_transformers_4(compat, name):
    result, _ = _theirs(compat, name)
    base = AutoTokenizer.from_pretrained(resolve_base(EXPORTS[name][0]))
    new_to_old = json.loads((_dir(compat, name) / "vocab_map.json").read_text())["new_to_old"]
    kept, checked = set(new_to_old), 0
    for text, ids in zip(TEXTS, result["input_ids"], strict=True):
        base_ids = base(text, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        if all(i in kept for i in base_ids):  # text the trimmed vocabulary covers
            assert [new_to_old[i] for i in ids] == base_ids, text
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name", EXPORTS)
@torch.no_grad()
def test_last_hidden_state_equals_ours(compat, name):
    result, tensors = _theirs(compat, name)
    _no_error(result, "automodel")
    directory = _dir(compat, name)
    batch = AutoTokenizer.from_pretrained(directory)(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH,
                                                     return_tensors="pt")
    ours = AutoModel.from_pretrained(directory).eval()(**batch).last_hidden_state
    theirs = tensors["last_hidden_state"]
    assert theirs.shape == ours.shape and torch.equal(tensors["attention_mask"], batch["attention_mask"])
    real = batch["attention_mask"].bool()  # padding positions are not an output anyone reads
    assert (theirs[real] - ours[real]).abs().max() <= ATOL


@pytest.mark.parametrize("name", EXPORTS)
def test_sentence_transformer_embeddings_equal_ours(compat, name):
    result, tensors = _theirs(compat, name)
    _no_error(result, "sentence_transformer")
    ours = SentenceTransformer(str(_dir(compat, name)), device="cpu").encode(TEXTS, batch_size=16,
                                                                             convert_to_tensor=True).cpu()
    theirs = tensors["sentence_embeddings"]
    assert theirs.shape == ours.shape == (len(TEXTS), read_config(_dir(compat, name))["hidden_size"])
    assert (theirs - ours).abs().max() <= ATOL


@pytest.mark.parametrize("name", M3_EXPORTS)
def test_flagembedding_loads_the_export_with_all_three_outputs_equal_to_ours(compat, name):
    result, _ = _theirs(compat, name)
    _no_error(result, "flagembedding")
    theirs = result["flagembedding"]
    # Without a head file FlagEmbedding makes random heads and says so only in its log.
    assert any("loading existing colbert_linear and sparse_linear" in m for m in theirs["log"]), theirs["log"]
    encoder = M3Encoder.from_pretrained(_dir(compat, name))
    ours = encoder.encode(TEXTS, max_length=MAX_LENGTH)
    assert (torch.tensor(theirs["dense"]) - ours.dense).abs().max() <= ATOL
    for mine, row in zip(ours.lexical, theirs["lexical"], strict=True):
        assert sorted(mine) == sorted(map(int, row)) and all(abs(mine[t] - row[str(t)]) <= ATOL for t in mine)
    for mine, vectors in zip(ours.colbert, theirs["colbert"], strict=True):
        assert (torch.tensor(vectors) - mine).abs().max() <= ATOL
    scores = encoder.compute_score(ours, ours)
    assert theirs["pair_scores"].keys() >= {"dense", "sparse", "colbert"}, theirs["pair_scores"].keys()
    for mode, values in theirs["pair_scores"].items():
        assert (torch.tensor(values).view(3, 3) - scores[mode][:3, :3]).abs().max() <= ATOL, mode
