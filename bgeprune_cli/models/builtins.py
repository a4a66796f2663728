"""Builtin base models made locally, offline: `base.model = "builtin:NAME"` in a recipe.

They exist for the smoke recipe, the tests and the full-shape benchmark; each is a normal HF model
directory (config, safetensors, a tokenizer whose vocabulary is counted here, sentence-transformers
files), materialised once into the cache (`$BGEPRUNE_CACHE`, default ~/.cache/bgeprune). The XLM-R ones
have both tokenizer files, `tokenizer.json` and `sentencepiece.bpe.model` (the same pieces and scores,
fairseq ids), as XLM-R and bge-m3 do; tiny-bert has `tokenizer.json` and `vocab.txt`.

    tiny-xlm-roberta  XLM-R family, 3 layers x 64 hidden, 4 heads of 16, FFN 128, CLS pooling (bge-style)
    tiny-bge-m3       tiny-xlm-roberta plus bge-m3's sparse and ColBERT head files (random, fp16, as upstream)
    tiny-bert         BERT family, 3 layers x 64 hidden, 4 heads of 16, FFN 96, mean pooling (MiniLM-style)
    bge-m3-random     bge-m3's exact architecture (24 x 1024, 568M parameters) and heads, random weights

Example:
    python -c "from bgeprune_cli.models.builtins import materialize; print(materialize('tiny-xlm-roberta'))"
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import torch

from ..atomic import atomic_dir
from ..errors import UsageError
from ..filenames import CONFIG, FAST_TOKENIZER, SPM_MODEL, VOCAB_TXT, WEIGHTS
from .probe import PROBE_TEXT
from .st_files import write_default_files

# bge-m3's config.json (BAAI/bge-m3), kept as data so its shape can be checked offline.
BGE_M3_CONFIG = {
    "architectures": ["XLMRobertaModel"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "classifier_dropout": None, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 8194, "model_type": "xlm-roberta", "num_attention_heads": 16,
    "num_hidden_layers": 24, "output_past": True, "pad_token_id": 1, "position_embedding_type": "absolute",
    "torch_dtype": "float32", "type_vocab_size": 1, "use_cache": True, "vocab_size": 250002,
}

_XLMR_TINY = {**BGE_M3_CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_hidden_layers": 3, "max_position_embeddings": 130, "initializer_range": 0.2}
_BERT_TINY = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 64, "initializer_range": 0.2, "intermediate_size": 96,
              "layer_norm_eps": 1e-12, "max_position_embeddings": 128, "model_type": "bert",
              "num_attention_heads": 4, "num_hidden_layers": 3, "pad_token_id": 0,
              "position_embedding_type": "absolute", "type_vocab_size": 2}

# name -> (tokenizer family, config, pooling, has bge-m3 head files)
BUILTINS = {
    "tiny-xlm-roberta": ("xlmr", _XLMR_TINY, "cls", False),
    "tiny-bge-m3": ("xlmr", _XLMR_TINY, "cls", True),
    "tiny-bert": ("bert", _BERT_TINY, "mean", False),
    "bge-m3-random": ("xlmr", BGE_M3_CONFIG, "cls", True),
}
_REVISION = "v5"  # bump when what a builtin contains changes, so stale caches are not reused


def cache_root() -> Path:
    return Path(os.environ.get("BGEPRUNE_CACHE", Path.home() / ".cache" / "bgeprune"))


def builtin_config(name: str) -> dict:
    if name not in BUILTINS:
        raise UsageError(f"unknown builtin model 'builtin:{name}'; choose one of: "
                         + ", ".join(f"builtin:{n}" for n in BUILTINS) + ", builtin:all-minilm-l6-v2")
    return dict(BUILTINS[name][1])


def materialize(name: str) -> Path:
    """The directory of builtin model `name`, created on first use (atomically)."""
    builtin_config(name)  # a clear error for unknown names
    family, config, pooling, m3_heads = BUILTINS[name]
    target = cache_root() / "builtin" / f"{name}-{_REVISION}"
    if target.is_dir():
        return target
    with atomic_dir(target, replace=False) as tmp:  # a process that made it first wins; the copies are identical
        lines = [ln for ln in PROBE_TEXT.read_text(encoding="utf-8").splitlines() if ln.strip()]
        vocab_size = _write_tokenizer(tmp, family, lines)
        config = {**config, "vocab_size": max(config["vocab_size"], vocab_size)} if name == "bge-m3-random" \
            else {**config, "vocab_size": vocab_size}
        _write_weights(tmp, config)
        if m3_heads:
            _write_m3_heads(tmp, config["hidden_size"])
        write_default_files(tmp, config["hidden_size"], pooling, max_seq_length=128)
    return target


def _write_weights(directory: Path, config: dict) -> None:
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel

    hf_config = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    model = AutoModel.from_config(hf_config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_m3_heads(directory: Path, hidden: int) -> None:
    """Random `colbert_linear.pt` / `sparse_linear.pt`, saved like upstream: plain fp16 state dicts."""
    from .m3 import M3Heads, save_heads

    torch.manual_seed(1)
    save_heads(M3Heads(hidden, hidden, file_dtype=torch.float16), directory)


# The vocabularies are counted, not trained: the `tokenizers` trainers are not deterministic (ties
# and float noise reorder pieces), and a builtin must be byte-identical on every machine.
_WORDS = 400


def _word_counts(tok, lines: list[str]) -> Counter:
    counts: Counter = Counter()
    for line in lines:
        normalized = tok.normalizer.normalize_str(line) if tok.normalizer is not None else line
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(normalized))
    return counts


def _by_frequency(words: Counter) -> list[tuple[str, int]]:
    """Most frequent first; ties in alphabetical order, so the result never depends on input order."""
    return sorted(words.items(), key=lambda wn: (-wn[1], wn[0]))


def _unigram_vocab(tok, lines: list[str], specials: list[str]) -> list[tuple[str, float]]:
    """Every character and the most frequent words, scored by log frequency (rounded)."""
    words = _word_counts(tok, lines)
    chars: Counter = Counter()
    for word, n in words.items():
        for c in word:
            chars[c] += n
    pieces = dict(chars)
    for word, n in _by_frequency(words)[:_WORDS]:
        pieces.setdefault(word, n)
    total = sum(pieces.values())
    scored = sorted(((p, round(math.log(n / total), 6)) for p, n in pieces.items()), key=lambda ps: (-ps[1], ps[0]))
    return [(p, 0.0) for p in specials] + scored


def _wordpiece_vocab(tok, lines: list[str], specials: list[str]) -> dict[str, int]:
    """Specials, every character (alone and as a ## continuation), then the most frequent words."""
    words = _word_counts(tok, lines)
    chars = sorted({c for word in words for c in word})
    frequent = [w for w, _ in _by_frequency(words) if len(w) > 1][:_WORDS]
    pieces = specials + chars + [f"##{c}" for c in chars] + frequent
    return {p: i for i, p in enumerate(dict.fromkeys(pieces))}


def _write_tokenizer(directory: Path, family: str, lines: list[str]) -> int:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if family == "xlmr":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.Unigram())
        # The pipeline transformers 5's XLMRobertaTokenizer builds around a tokenizer.json's vocabulary (no
        # normalizer without a SentencePiece charsmap; split on whitespace, then Metaspace), written out, so
        # that transformers 4, which runs tokenizer.json as written, tokenizes the same (tests/test_compat.py).
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
        tok.decoder = decoders.Metaspace()
        tok.model = models.Unigram(_unigram_vocab(tok, lines, specials), unk_id=specials.index("<unk>"),
                                   byte_fallback=False)
        tok.add_special_tokens(["<mask>"])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
        names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                 "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
        tokenizer_config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 128, **names}
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.model = models.WordPiece(_wordpiece_vocab(tok, lines, specials), unk_token="[UNK]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        names = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                 "mask_token": "[MASK]"}
        tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 128,
                            **names}
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        (directory / VOCAB_TXT).write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
    tok.save(str(directory / FAST_TOKENIZER))
    if family == "xlmr":
        _write_sentencepiece(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n")
    return tok.get_vocab_size()


def _write_sentencepiece(directory: Path) -> None:
    """`sentencepiece.bpe.model` with tokenizer.json's pieces and scores (built through the proto, not trained:
    deterministic). Its charsmap maps every Unicode space to ' ', which SentencePiece then collapses and
    strips, as WhitespaceSplit does in tokenizer.json, so both files give the same ids
    (tests/test_vocab_tokenizers.py)."""
    from .tokenizers import sentencepiece_model as spm

    vocab = [tuple(v) for v in json.loads((directory / FAST_TOKENIZER).read_text(encoding="utf-8"))["model"]["vocab"]]
    charsmap = spm.precompiled_charsmap({c: " " for c in spm.WHITESPACE if c != " "})
    (directory / SPM_MODEL).write_bytes(spm.unigram_model(vocab, charsmap))
