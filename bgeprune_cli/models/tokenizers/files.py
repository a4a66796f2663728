"""A model directory's tokenizer files as vocabulary trimming sees them: which ids exist, which are special.

Trimming understands `tokenizer.json` with a Unigram (XLM-R, SentencePiece) or WordPiece (BERT) model,
and beside it `sentencepiece.bpe.model` (checked to follow XLM-R's fairseq ids), `vocab.txt` (checked to
list tokenizer.json's WordPiece vocabulary in id order), `tokenizer_config.json`, `special_tokens_map.json`
and `added_tokens.json`. Anything else that defines ids (BPE merges, `spiece.model`) is refused: a file
bgeprune cannot rewrite would be left stale, and loaders that prefer it would read wrong ids.

Example:
    from bgeprune_cli.models.builtins import materialize
    files = read_tokenizer_files(materialize("tiny-xlm-roberta"))
    files.kind, len(files), sorted(files.special)     # ('unigram', 508, [0, 1, 2, 3, 507])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ...errors import BadModelFiles
from ...filenames import ADDED_TOKENS, FAST_TOKENIZER, SPECIAL_TOKENS_MAP, SPM_MODEL, TOKENIZER_CONFIG, VOCAB_TXT
from ..st_files import read_json_file
from . import sentencepiece_model as spm

WORD_START = "\u2581"  # SentencePiece marks the start of a word with this piece ("▁")
# config.json keys that name token ids (kept by trimming, renumbered in a trimmed export's config)
SPECIAL_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "unk_token_id",
                   "mask_token_id")
UNSUPPORTED_FILES = {"spiece.model": "a SentencePiece model without XLM-R's fairseq ids",
                     "vocab.json": "a BPE vocabulary", "merges.txt": "BPE merges"}


@dataclass
class TokenizerFiles:
    """The vocabulary of a model directory: `pieces[i]` is the token with id i (model vocabulary, then added
    tokens past it); `special` holds the ids trimming always keeps."""

    directory: Path
    kind: str  # "unigram" or "wordpiece"
    data: dict  # tokenizer.json, parsed
    pieces: list[str]
    model_size: int  # ids below this are the model's vocabulary; the rest are added tokens
    special: set[int] = field(default_factory=set)
    spm_ids: list[int | None] | None = None  # HF id of every sentencepiece.bpe.model piece, if the file exists

    def __len__(self) -> int:
        return len(self.pieces)

    @cached_property
    def ids(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        for i, piece in enumerate(self.pieces):
            ids.setdefault(piece, i)
        return ids

    def has(self, name: str) -> bool:
        return (self.directory / name).is_file()

    def unk_id(self) -> int:
        model = self.data["model"]
        return model["unk_id"] if self.kind == "unigram" else self.ids[model["unk_token"]]

    def encoders(self) -> list:
        """The `tokenizers.Tokenizer`s whose ids a trimmed vocabulary must cover: the file as written (what
        transformers 4, text-embeddings-inference and vLLM run) and, when it differs, the pipeline
        transformers 5 builds around the same vocabulary (XLM-R: its own whitespace split; see
        docs/design.md, Vocabulary)."""
        from tokenizers import Tokenizer

        from ..loading import load_tokenizer

        as_written = Tokenizer.from_file(str(self.directory / FAST_TOKENIZER))
        backend = getattr(load_tokenizer(self.directory), "backend_tokenizer", None)
        encoders = [as_written]
        if backend is not None and not all(_same(getattr(as_written, part), getattr(backend, part))
                                           for part in ("normalizer", "pre_tokenizer")):
            encoders.append(backend)
        for encoder in encoders:  # whole texts: a file may fix padding and truncation (all-MiniLM: 128)
            encoder.no_padding()
            encoder.no_truncation()
        return encoders

    def character_ids(self, chars: set[str]) -> set[int]:
        """The single-character tokens of `chars` (WordPiece: also their ## continuations), so that a word a
        corpus in those scripts lacks falls back to its characters rather than to <unk>."""
        forms = chars if self.kind == "unigram" else chars | {"##" + c for c in chars}
        return {self.ids[f] for f in forms if f in self.ids and self.ids[f] < self.model_size}

    def lookup(self, token: str) -> int | None:
        return self.ids.get(token)

    def suggest(self, token: str) -> str:
        """A hint for a `keep` token that is not in the vocabulary (SentencePiece marks a word start with ▁)."""
        for candidate in ("▁" + token, "##" + token, token.lower(), "▁" + token.lower()):
            if candidate in self.ids:
                return f"; did you mean '{candidate}'?"
        return ""


def _same(a, b) -> bool:
    """Two `tokenizers` components (normalizers, pre-tokenizers) are the same pipeline step."""
    if a is None or b is None:
        return a is b
    return json.loads(a.__getstate__()) == json.loads(b.__getstate__())


def _read_json(path: Path) -> dict:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise BadModelFiles(f"{path} must hold a JSON object; restore it from the model it came from.")
    return data


def read_tokenizer_files(directory: Path, extra_special: set[int] = frozenset()) -> TokenizerFiles:
    """The directory's vocabulary, every file checked to agree with tokenizer.json (BadModelFiles otherwise)."""
    directory = Path(directory)
    path = directory / FAST_TOKENIZER
    if not path.is_file():
        raise BadModelFiles(f"{directory} has no {FAST_TOKENIZER}, the one tokenizer file vocabulary trimming "
                            f"rewrites from (with a Unigram or WordPiece model). Save the fast tokenizer there first: "
                            f"AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR).")
    for name, what in UNSUPPORTED_FILES.items():
        if (directory / name).is_file():
            raise BadModelFiles(f"{directory / name} is {what}, which vocabulary trimming cannot rewrite; a copied "
                                f"file would give other ids than the trimmed tokenizer.json.")
    data = _read_json(path)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    kind = {"Unigram": "unigram", "WordPiece": "wordpiece"}.get(model.get("type"))
    if kind is None:
        raise BadModelFiles(f"{path} has a {model.get('type') or 'missing'} model; vocabulary trimming understands "
                            f"Unigram (XLM-R, SentencePiece) and WordPiece (BERT) tokenizers. A BPE vocabulary cannot "
                            f"lose tokens without rewriting its merges.")
    pieces = _model_pieces(kind, model, path)
    model_size = len(pieces)
    added = sorted(((t["id"], t["content"]) for t in data.get("added_tokens") or []), key=lambda t: t[0])
    for token_id, content in added:
        if token_id == len(pieces):
            pieces.append(content)
        elif not (token_id < model_size and pieces[token_id] == content):
            raise BadModelFiles(f"{path}: added token {content!r} has id {token_id}, which is neither its id in the "
                                f"vocabulary nor the next free id; the file is inconsistent.")
    files = TokenizerFiles(directory, kind, data, pieces, model_size)
    files.special = {token_id for token_id, _ in added} | {files.unk_id()} \
        | _processor_ids(data.get("post_processor")) \
        | {i for i in extra_special if 0 <= i < len(pieces)} | _config_special(directory, files)
    if kind == "unigram" and files.ids.get(WORD_START, model_size) < model_size:
        # The bare word-start piece: without it SentencePiece fuses unknown runs across words while
        # tokenizer.json splits them per word, and the two trimmed files would disagree.
        files.special.add(files.ids[WORD_START])
    if (directory / SPM_MODEL).is_file():
        if kind != "unigram":
            raise BadModelFiles(f"{directory / SPM_MODEL} beside a WordPiece tokenizer.json: the two files do not "
                                f"belong together.")
        files.spm_ids = spm.fairseq_hf_ids(spm.read_model(directory / SPM_MODEL), files.ids, directory / SPM_MODEL)
    if (directory / VOCAB_TXT).is_file():
        lines = (directory / VOCAB_TXT).read_text(encoding="utf-8").split("\n")
        if kind != "wordpiece" or [line.rstrip("\r") for line in lines if line] != pieces[:model_size]:
            raise BadModelFiles(f"{directory / VOCAB_TXT} does not list tokenizer.json's vocabulary in id order, so "
                                f"the slow and fast tokenizers disagree already; bgeprune cannot trim them "
                                "consistently.")
    return files


def base_tokenizer_files(base_dir: Path, base_config: dict) -> TokenizerFiles:
    """The base's tokenizer files with every id that must survive marked special: added and special tokens,
    the ids config.json names, and for RoBERTa-style models every id up to the padding id (position ids
    are counted from it, so it must not move)."""
    from ..families import adapter_for

    extra = {v for k, v in base_config.items() if k in SPECIAL_ID_KEYS and isinstance(v, int) and v >= 0}
    if adapter_for(base_config["model_type"]).positions_after_padding:
        extra |= set(range(base_config.get("pad_token_id", 1) + 1))
    files = read_tokenizer_files(base_dir, extra)
    rows = base_config.get("vocab_size", len(files))
    if len(files) > rows:
        raise BadModelFiles(f"{base_dir}: the tokenizer has {len(files)} ids but the embedding table only {rows} "
                            f"rows; the tokenizer does not belong to this model.")
    return files


def _model_pieces(kind: str, model: dict, path: Path) -> list[str]:
    vocab = model.get("vocab")
    if kind == "unigram" and isinstance(vocab, list) and all(isinstance(v, list) and len(v) == 2 for v in vocab):
        return [piece for piece, _ in vocab]
    if kind == "wordpiece" and isinstance(vocab, dict) and sorted(vocab.values()) == list(range(len(vocab))):
        return sorted(vocab, key=vocab.__getitem__)
    raise BadModelFiles(f"{path}: the {model.get('type')} vocabulary is malformed (expected "
                        f"{'[[piece, score], ...]' if kind == 'unigram' else 'token -> ids 0..n-1'}).")


def _processor_ids(node) -> set[int]:
    """Every token id the post-processor inserts (<s>, </s>, [CLS], [SEP])."""
    if isinstance(node, list):
        return set().union(*map(_processor_ids, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    ids = set()
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):
            ids |= {i for i in value if isinstance(i, int)}
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            ids.add(value[1])
        else:
            ids |= _processor_ids(value)
    return ids


def _config_special(directory: Path, files: TokenizerFiles) -> set[int]:
    """Ids of the special tokens tokenizer_config.json and special_tokens_map.json name (bos, pad, mask, ...),
    of its added_tokens_decoder and of added_tokens.json: all of them must be kept."""
    ids: set[int] = set()
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        if (directory / name).is_file():
            config = _read_json(directory / name)
            for key, value in config.items():
                content = value.get("content") if isinstance(value, dict) else value
                if key.endswith("_token") and isinstance(content, str) and content in files.ids:
                    ids.add(files.ids[content])
                if key == "additional_special_tokens" and isinstance(value, list):
                    ids |= {files.ids[v] for v in value if isinstance(v, str) and v in files.ids}
    if (directory / TOKENIZER_CONFIG).is_file():
        decoder = _read_json(directory / TOKENIZER_CONFIG).get("added_tokens_decoder") or {}
        ids |= {int(k) for k in decoder if str(k).isdigit() and int(k) < len(files)}
    if (directory / ADDED_TOKENS).is_file():
        ids |= {v for v in _read_json(directory / ADDED_TOKENS).values() if isinstance(v, int) and v < len(files)}
    return ids
