"""Tokenizer files for vocabulary trimming: the builtins' sentencepiece.bpe.model, trimming every file
from one kept-id list, verify's tokenizer check on tampered files, and tokenizers trimming refuses."""

from __future__ import annotations

import json
import shutil

import pytest
from tokenizers import Tokenizer, normalizers

from bgeprune_cli.errors import BadModelFiles
from bgeprune_cli.models.builtins import materialize
from bgeprune_cli.models.loading import load_tokenizer, read_config
from bgeprune_cli.models.probe import probe_texts
from bgeprune_cli.models.tokenizers import sentencepiece_model as spm
from bgeprune_cli.models.tokenizers.files import base_tokenizer_files, read_tokenizer_files
from bgeprune_cli.models.tokenizers.vocab_map import VocabMap
from bgeprune_cli.stages import export_hf, prune
from bgeprune_cli.verification.tokenizer_check import check_tokenizer
from conftest import corpus_vocab, make_run

# What SentencePiece and tokenizers' pipelines could disagree on: every kind of whitespace, runs of
# unknown characters, accents, an emoji, an empty text.
TRICKY = ["  Leading,   doubled\tand trailing   spaces \n", "a\u00a0b\u3000c\u2028d\r\ne\x0bf", "🚀🚀 🚀x🚀",
          "ÜBER naïve CAFÉ — “quoted” ½ ﬁn", "e\u0301 ça", "", " ", "x"]
ENGLISH = probe_texts()[:14]


def _fast_ids(directory, texts):
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def test_builtin_sentencepiece_model_is_deterministic_and_agrees_with_tokenizer_json(builtin_cache, tmp_path):
    directory = materialize("tiny-xlm-roberta")
    vocab = [tuple(v) for v in json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]]
    charsmap = spm.precompiled_charsmap({c: " " for c in spm.WHITESPACE if c != " "})
    assert spm.unigram_model(vocab, charsmap) == (directory / "sentencepiece.bpe.model").read_bytes()
    texts = probe_texts() + TRICKY
    assert spm.encode_ids(directory / "sentencepiece.bpe.model", texts) == _fast_ids(directory, texts)
    assert load_tokenizer(directory)(texts, add_special_tokens=False)["input_ids"] == _fast_ids(directory, texts)


def test_precompiled_charsmap_reads_the_same_in_tokenizers():
    """The trie is the format tokenizers' Precompiled normalizer reads too: an independent reader."""
    import base64

    table = {"\t": " ", "ﬁ": "fi", "é": "e", "\u3000": " "}
    blob = base64.b64encode(spm.precompiled_charsmap(table)).decode()
    normalizer = normalizers.Precompiled(base64.b64decode(blob))
    assert normalizer.normalize_str("a\tb ﬁné\u3000z") == "a b fine z"


@pytest.mark.parametrize("name", ["tiny-xlm-roberta", "tiny-bert"])
def test_trimmed_files_agree_and_map_back(tmp_path, builtin_cache, name):
    base = "builtin:" + name
    run = make_run(tmp_path / "run", base, {}, vocab=corpus_vocab(base, ENGLISH), sample=ENGLISH)
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp_path / "out")
    vmap = VocabMap.read(tmp_path / "out")
    check, covered = check_tokenizer(tmp_path / "out", vmap, None, None)
    assert check.status == "pass" and covered == []  # no run given: agreement only
    from bgeprune_cli.artifacts import read_artifact

    check, covered = check_tokenizer(tmp_path / "out", vmap, read_artifact(run / "masks"), materialize(name))
    assert check.status == "pass", check.message
    assert set(ENGLISH) <= set(covered) and "Кошка спит на диване." not in covered
    unk = 3 if name == "tiny-xlm-roberta" else 1
    assert unk in _fast_ids(tmp_path / "out", ["Кошка спит на диване."])[0]  # another script: <unk>
    assert unk not in _fast_ids(tmp_path / "out", ["zebra crossings"])[0]  # unseen words: characters, not <unk>


def _tamper_swap_pieces(out):
    data = json.loads((out / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab[10], vocab[11] = vocab[11], vocab[10]  # two pieces trade ids: ids silently wrong
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))


def _tamper_normalizer(out):
    data = json.loads((out / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Lowercase"}  # a rewritten pipeline: transformers 4 would run it, 5 would not
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))


def _tamper_scores_in_both_files(out):
    """Both files agree with each other, but no longer with the base: whole-word pieces lose to characters."""
    data = json.loads((out / "tokenizer.json").read_text())
    proto = spm.read_model(out / "sentencepiece.bpe.model")
    for entry, piece in zip(data["model"]["vocab"][4:], proto.pieces[3:]):
        if len(entry[0]) > 2:
            entry[1] = piece.score = -99.0
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (out / "sentencepiece.bpe.model").write_bytes(proto.SerializeToString())


def _tamper_shift_map(out):
    data = json.loads((out / "vocab_map.json").read_text())
    ids = data["new_to_old"]
    k = next(k for k in range(5, len(ids) - 1) if ids[k] + 1 < ids[k + 1])
    ids[k] += 1  # still a valid map (ascending, distinct), but one token maps to its neighbour
    (out / "vocab_map.json").write_text(json.dumps(data))
    (out / "manifest.json").unlink()  # the manifest check would catch the edit; the tokenizer check must too


@pytest.mark.parametrize("tamper,needle", [(_tamper_swap_pieces, "do not belong together"),
                                           (_tamper_normalizer, "give different ids"),
                                           (_tamper_scores_in_both_files, "tokenize differently after trimming"),
                                           (_tamper_shift_map, "differs from the kept token ids")])
def test_tokenizer_check_fails_on_tampered_files(tmp_path, builtin_cache, tamper, needle):
    from bgeprune_cli.artifacts import read_artifact

    base = "builtin:tiny-xlm-roberta"
    run = make_run(tmp_path / "run", base, {}, vocab=corpus_vocab(base, ENGLISH), sample=ENGLISH)
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp_path / "out")
    tamper(tmp_path / "out")
    check, _ = check_tokenizer(tmp_path / "out", VocabMap.read(tmp_path / "out"), read_artifact(run / "masks"),
                               materialize("tiny-xlm-roberta"))
    assert check.status == "fail" and needle in check.message, check.message


def _copy(tmp_path, name: str):
    target = tmp_path / name
    shutil.copytree(materialize(name), target)
    return target


@pytest.mark.parametrize("edit,needle", [
    (lambda d: (d / "tokenizer.json").unlink(), "has no tokenizer.json"),
    (lambda d: (d / "spiece.model").write_bytes(b"x"), "spiece.model is a SentencePiece model without"),
    (lambda d: (d / "vocab.txt").write_text("[PAD]\n"), "does not list tokenizer.json's vocabulary"),
    (lambda d: _to_bpe(d), "has a BPE model"),
])
def test_tokenizers_trimming_cannot_rewrite_are_refused(tmp_path, builtin_cache, edit, needle):
    directory = _copy(tmp_path, "tiny-bert")
    edit(directory)
    with pytest.raises(BadModelFiles, match=needle) as info:
        base_tokenizer_files(directory, read_config(directory))
    assert info.value.exit_code == 3


def _to_bpe(directory):
    data = json.loads((directory / "tokenizer.json").read_text())
    data["model"] = {"type": "BPE", "vocab": {"a": 0}, "merges": []}
    (directory / "tokenizer.json").write_text(json.dumps(data))


def test_sentencepiece_model_that_does_not_match_tokenizer_json_is_refused(tmp_path, builtin_cache):
    directory = _copy(tmp_path, "tiny-xlm-roberta")
    proto = spm.read_model(directory / "sentencepiece.bpe.model")
    proto.pieces[5].piece, proto.pieces[6].piece = proto.pieces[6].piece, proto.pieces[5].piece
    (directory / "sentencepiece.bpe.model").write_bytes(proto.SerializeToString())
    with pytest.raises(BadModelFiles, match="fairseq ids"):
        read_tokenizer_files(directory)


def _bert_with_specials_inside(tmp_path):
    """tiny-bert with [UNK] [CLS] [SEP] [MASK] moved to ids 100..103, as in BERT's real vocabulary (the tiny
    builtins have every special token first, where renumbering cannot move it). Rows move with them."""
    import torch
    from safetensors.torch import load_file, save_file

    directory = _copy(tmp_path, "tiny-bert")
    data = json.loads((directory / "tokenizer.json").read_text())
    old = sorted(data["model"]["vocab"], key=data["model"]["vocab"].get)
    order = [0] + list(range(5, 104)) + [1, 2, 3, 4] + list(range(104, len(old)))  # new id -> old id
    new = {o: n for n, o in enumerate(order)}
    data["model"]["vocab"] = {old[o]: n for n, o in enumerate(order)}
    for token in data["post_processor"]["special_tokens"].values():
        token["ids"] = [new[i] for i in token["ids"]]
    (directory / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (directory / "vocab.txt").write_text("".join(old[o] + "\n" for o in order), encoding="utf-8")
    state = load_file(str(directory / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    state[key] = state[key][torch.tensor(order)].contiguous()
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def test_special_tokens_inside_the_vocabulary_are_renumbered_everywhere(tmp_path, builtin_cache):
    from transformers import AutoModel

    from bgeprune_cli.artifacts import read_artifact
    from bgeprune_cli.models.probe import max_abs_diff, model_outputs, probe_batches
    from bgeprune_cli.models.st_files import read_pooling

    base = _bert_with_specials_inside(tmp_path)
    assert load_tokenizer(base)("a")["input_ids"][0] == 101  # [CLS], as in bert-base-uncased
    run = make_run(tmp_path / "run", str(base), {}, vocab=corpus_vocab(str(base), ENGLISH), sample=ENGLISH)
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp_path / "out")
    out, vmap = tmp_path / "out", VocabMap.read(tmp_path / "out")
    tokenizer = load_tokenizer(out)
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id] == \
        [vmap.old_to_new[i] for i in (0, 100, 101, 102)] and tokenizer.cls_token_id < 101
    check, covered = check_tokenizer(out, vmap, read_artifact(run / "masks"), base)
    assert check.status == "pass" and set(ENGLISH) <= set(covered), check.message
    as_written = Tokenizer.from_file(str(out / "tokenizer.json")).encode("a").ids  # transformers 4, TEI: the file's ids
    assert (as_written[0], as_written[-1]) == (tokenizer.cls_token_id, tokenizer.sep_token_id)
    ours = model_outputs(AutoModel.from_pretrained(out).eval(), probe_batches(tokenizer, ENGLISH, 64),
                         read_pooling(out))
    theirs = model_outputs(AutoModel.from_pretrained(base).eval(), probe_batches(load_tokenizer(base), ENGLISH, 64),
                           read_pooling(base))
    assert max(max_abs_diff(theirs, ours).values()) <= 1e-5


def test_truncation_and_padding_in_tokenizer_json_do_not_cut_the_count(tmp_path, builtin_cache):
    """all-MiniLM's tokenizer.json fixes truncation and padding at 128: counting must still see whole texts,
    and the padding id must follow the pad token."""
    from bgeprune_cli.artifacts import read_artifact

    base = _copy(tmp_path, "tiny-bert")
    data = json.loads((base / "tokenizer.json").read_text())
    data["truncation"] = {"direction": "Right", "max_length": 6, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                       "pad_type_id": 0, "pad_token": "[PAD]"}
    (base / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    kept = corpus_vocab(str(base), ENGLISH)
    late = load_tokenizer(base)(ENGLISH[1], add_special_tokens=False)["input_ids"][-3:]  # past the 6-token cut
    assert set(late) <= set(kept)
    run = make_run(tmp_path / "run", str(base), {}, vocab=kept, sample=ENGLISH)
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp_path / "out")
    check, _ = check_tokenizer(tmp_path / "out", VocabMap.read(tmp_path / "out"), read_artifact(run / "masks"), base)
    assert check.status == "pass", check.message


@pytest.mark.slow
def test_all_minilm_real_bert_vocabulary_trims_and_verifies(tmp_path, builtin_cache):
    """The real bert-base-uncased vocabulary: [CLS] at 101, truncation and padding fixed in tokenizer.json."""
    from bgeprune_cli.artifacts import read_artifact
    from bgeprune_cli.models.loading import resolve_base
    from bgeprune_cli.stages import verify

    base = "builtin:all-minilm-l6-v2"
    run = make_run(tmp_path / "run", base, {}, vocab=corpus_vocab(base, probe_texts()), sample=probe_texts())
    prune.run(run / "masks")
    export_hf.run(run / "pruned", tmp_path / "out")
    tokenizer = load_tokenizer(tmp_path / "out")
    assert tokenizer.cls_token_id < 101 and len(tokenizer) < 30522
    check, _ = check_tokenizer(tmp_path / "out", VocabMap.read(tmp_path / "out"), read_artifact(run / "masks"),
                               resolve_base(base))
    assert check.status == "pass", check.message
    assert verify.run(tmp_path / "out")["ok"]
