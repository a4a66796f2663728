"""`sentencepiece.bpe.model`, XLM-R's slow-tokenizer file, read and written through the SentencePiece proto.

XLM-R keeps fairseq's ids, one more than SentencePiece's for every ordinary piece:

    HF id   0 <s>   1 <pad>   2 </s>   3 <unk>   spm id + 1 (ordinary pieces)   len(spm) + 1 <mask>
    spm id  1 <s>   -         2 </s>   0 <unk>   spm id

so the slow tokenizer (transformers 4's `XLMRobertaTokenizer`, and `sentencepiece` itself) and
`tokenizer.json` give the same ids only while that offset holds. `trim` keeps the pieces of kept HF ids
in their order, which keeps it; `unigram_model` builds such a file from a Unigram vocabulary (the
builtins', counted, never trained: byte-identical on every machine).

Example:
    python -c "from bgeprune_cli.models.tokenizers.sentencepiece_model import encode_ids; \
print(encode_ids('out/smoke/sentencepiece.bpe.model', ['Le chat dort.']))"
"""

from __future__ import annotations

import struct
from pathlib import Path

from ...errors import BadModelFiles, missing_module

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # HF ids 0..3
# Unicode White_Space: what `tokenizers`' WhitespaceSplit (Rust char::is_whitespace) splits on.
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
              + "\u2028\u2029\u202f\u205f\u3000")


def _proto():
    try:  # the proto module imports google.protobuf, which sentencepiece itself does not require
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise missing_module(exc, "reading or writing sentencepiece.bpe.model") from None
    return sentencepiece_model_pb2


def read_model(path: Path):
    """The parsed ModelProto of a .model file (BadModelFiles if it is not one)."""
    proto = _proto().ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as exc:  # DecodeError, or bytes that happen to parse to nothing
        raise BadModelFiles(f"{path} is not a SentencePiece model ({exc.__class__.__name__}); restore it from the "
                            f"model it came from.") from None
    if not proto.pieces:
        raise BadModelFiles(f"{path} is not a SentencePiece model (no pieces); restore it from the model it came from.")
    return proto


def fairseq_hf_ids(proto, hf_ids: dict[str, int], where: Path) -> list[int | None]:
    """The HF id of every spm piece (None for <unk>/<s>/</s>, which HF puts at fixed ids), checked to follow
    the fairseq offset; a file that does not match tokenizer.json is refused rather than trimmed wrongly."""
    kinds = _proto().ModelProto.SentencePiece
    ids: list[int | None] = []
    for spm_id, piece in enumerate(proto.pieces):
        if piece.type in (kinds.UNKNOWN, kinds.CONTROL):
            ids.append(None)
            continue
        hf_id = hf_ids.get(piece.piece)
        if hf_id != spm_id + 1:
            raise BadModelFiles(f"{where}: piece {spm_id} ({piece.piece!r}) is id {hf_id} in tokenizer.json, not "
                                f"{spm_id + 1} as XLM-R's fairseq ids have it: the two tokenizer files do not "
                                f"belong together and give different ids.")
        ids.append(hf_id)
    return ids


def trim(proto, hf_ids_of_pieces: list[int | None], kept: set[int]) -> bytes:
    """The model with only the pieces whose HF id is kept (and <unk>, <s>, </s>), in their order."""
    out = _proto().ModelProto()
    out.CopyFrom(proto)
    del out.pieces[:]
    for piece, hf_id in zip(proto.pieces, hf_ids_of_pieces):
        if hf_id is None or hf_id in kept:
            out.pieces.add().CopyFrom(piece)
    out.trainer_spec.vocab_size = len(out.pieces)
    return out.SerializeToString()


def unigram_model(vocab: list[tuple[str, float]], charsmap: bytes) -> bytes:
    """An XLM-R-style model from a Unigram vocabulary that starts with <s>, <pad>, </s>, <unk> (HF order):
    <unk>, <s>, </s> first, then the ordinary pieces, so HF id = spm id + 1."""
    pb = _proto()
    kinds = pb.ModelProto.SentencePiece
    if [p for p, _ in vocab[:4]] != list(FAIRSEQ_SPECIALS):
        raise ValueError(f"an XLM-R Unigram vocabulary starts with {FAIRSEQ_SPECIALS}, not {vocab[:4]}")
    model = pb.ModelProto()
    for piece, kind in (("<unk>", kinds.UNKNOWN), ("<s>", kinds.CONTROL), ("</s>", kinds.CONTROL)):
        model.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in vocab[4:]:
        model.pieces.add(piece=piece, score=score, type=kinds.NORMAL)
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size = spec.UNIGRAM, len(model.pieces)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = model.normalizer_spec
    norm.name, norm.precompiled_charsmap = "identity", charsmap
    norm.add_dummy_prefix = norm.remove_extra_whitespaces = norm.escape_whitespaces = True
    return model.SerializeToString()


def precompiled_charsmap(table: dict[str, str]) -> bytes:
    """A SentencePiece `precompiled_charsmap` (the format `tokenizers`' Precompiled normalizer reads too): a
    u32 trie size, a darts-clone double array over the UTF-8 keys, then the NUL-terminated replacements.

    A unit holds its label (low byte), has-leaf (bit 8) and the offset to its children's base (bits 10+);
    child c of a node at p lives at base ^ c, and a key's value sits at its node's base (label 0) with
    bit 31 set. Every base is used by one node only, so no walk can land on another node's child.
    """
    replacements, root = bytearray(), {}
    for key, value in sorted(table.items()):
        node = root
        for byte in key.encode():
            node = node.setdefault(byte, {})
        node[0] = len(replacements)
        replacements += value.encode() + b"\0"
    units, bases, todo = {0: 0}, set(), [(root, 0)]
    while todo:
        node, position = todo.pop(0)
        labels = sorted(node)
        base = 256
        while base in bases or any(base ^ label in units for label in labels):
            base += 1
        bases.add(base)
        units[position] |= ((position ^ base) << 10) | ((0 in node) << 8)
        for label in labels:
            if label == 0:
                units[base] = node[0] | 1 << 31
            else:
                units[base ^ label] = label
                todo.append((node[label], base ^ label))
    size = (max(bases) | 0xFF) + 1  # a walk reads base ^ byte for any byte: cover the whole block
    array = [units.get(i, 0) for i in range(size)]
    return struct.pack(f"<I{size}I", 4 * size, *array) + bytes(replacements)


def encode_ids(path: Path, texts: list[str]) -> list[list[int]]:
    """HF (fairseq) ids of `texts` by the SentencePiece library on this file, as transformers 4's slow
    XLMRobertaTokenizer computes them (no <s>/</s> added)."""
    try:
        import sentencepiece
    except ImportError as exc:
        raise missing_module(exc, "checking sentencepiece.bpe.model") from None
    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    unk = processor.unk_id()
    return [[3 if i == unk else i + 1 for i in ids] for ids in processor.encode(texts)]
