"""Rewrite a model's tokenizer files for a trimmed vocabulary, every file from the one kept-id list.

Kept ids keep their order (new id = rank of the old id among the kept ones), so XLM-R's <s> <pad> </s>
<unk> stay 0..3 and <mask> stays last. `tokenizer.json` is edited as JSON, not re-serialised by the
installed `tokenizers`: the normalizer, pre-tokenizer and decoder stay exactly as the base wrote them
(transformers 4 runs them as written), and the file keeps the format the base's own loaders read.
Rewritten: the model's vocabulary (Unigram pieces with their scores, or WordPiece ids) and unk id, the
added tokens' ids, the post-processor's ids and padding's pad id; `sentencepiece.bpe.model` through the
SentencePiece proto (fairseq offset kept); `vocab.txt`; ids in `tokenizer_config.json` and
`added_tokens.json`. Before anything is written, the new tokenizer.json is loaded and every token's id
checked.

Example:
    from bgeprune_cli.models.builtins import materialize
    files = read_tokenizer_files(materialize("tiny-bert"))
    write_trimmed(files, list(range(100)), Path("trimmed"))   # an existing directory; ids 0..99 kept
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
from pathlib import Path

from ...filenames import (
    ADDED_TOKENS,
    CONFIG,
    FAST_TOKENIZER,
    SPECIAL_TOKENS_MAP,
    SPM_MODEL,
    TOKENIZER_CONFIG,
    VOCAB_TXT,
)
from . import sentencepiece_model as spm
from .files import TokenizerFiles, base_tokenizer_files


def _remap_processor(node, new: dict[int, int]):
    """The post-processor with every token id renumbered (TemplateProcessing, Roberta/BertProcessing, Sequence)."""
    if isinstance(node, list):
        return [_remap_processor(item, new) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):  # TemplateProcessing: {"id", "ids": [...], "tokens"}
            out[key] = [new[i] for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:  # ["</s>", 2]
            out[key] = [value[0], new[value[1]]]
        else:
            out[key] = _remap_processor(value, new)
    return out


def trimmed_tokenizer_json(files: TokenizerFiles, kept: list[int]) -> dict:
    """tokenizer.json of the kept ids (the base's other parts untouched)."""
    new = {old: i for i, old in enumerate(kept)}
    data = copy.deepcopy(files.data)
    model = data["model"]
    if files.kind == "unigram":
        model["vocab"] = [model["vocab"][i] for i in kept if i < files.model_size]
        model["unk_id"] = new[model["unk_id"]]
    else:
        model["vocab"] = {files.pieces[i]: new[i] for i in kept if i < files.model_size}
    data["added_tokens"] = [{**t, "id": new[t["id"]]} for t in data.get("added_tokens") or []]
    if data.get("post_processor") is not None:
        data["post_processor"] = _remap_processor(data["post_processor"], new)
    if isinstance(data.get("padding"), dict) and "pad_id" in data["padding"]:
        data["padding"] = {**data["padding"], "pad_id": new[data["padding"]["pad_id"]]}
    return data


def _check_ids(data: dict, files: TokenizerFiles, kept: list[int]) -> None:
    """Load the new tokenizer.json and check every token's id, so no inconsistent file is ever written."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    wrong = [(files.pieces[old], new) for new, old in enumerate(kept)
             if tokenizer.token_to_id(files.pieces[old]) != new]
    if wrong or tokenizer.get_vocab_size() != len(kept):
        raise AssertionError(f"the trimmed tokenizer.json gives other ids than planned ({wrong[:3]}, size "
                             f"{tokenizer.get_vocab_size()} for {len(kept)} kept tokens)")


def write_trimmed(files: TokenizerFiles, kept: list[int], out: Path) -> list[str]:
    """Write the tokenizer files of `files.directory` into `out` for the kept ids; returns the names written."""
    out = Path(out)
    kept = sorted(kept)
    missing = sorted(files.special - set(kept))
    if missing:
        raise ValueError(f"special token ids {missing[:5]} would be dropped")
    new = {old: i for i, old in enumerate(kept)}
    data = trimmed_tokenizer_json(files, kept)
    _check_ids(data, files, kept)
    (out / FAST_TOKENIZER).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    written = [FAST_TOKENIZER]
    if files.spm_ids is not None:
        proto = spm.read_model(files.directory / SPM_MODEL)
        (out / SPM_MODEL).write_bytes(spm.trim(proto, files.spm_ids, set(kept)))
        written.append(SPM_MODEL)
    if files.has(VOCAB_TXT):
        (out / VOCAB_TXT).write_text("".join(f"{files.pieces[i]}\n" for i in kept if i < files.model_size),
                                     encoding="utf-8")
        written.append(VOCAB_TXT)
    if files.has(TOKENIZER_CONFIG):
        config = json.loads((files.directory / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
        if isinstance(config.get("added_tokens_decoder"), dict):
            config["added_tokens_decoder"] = {str(new[int(k)]): v for k, v in config["added_tokens_decoder"].items()}
        (out / TOKENIZER_CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(TOKENIZER_CONFIG)
    if files.has(ADDED_TOKENS):
        added = json.loads((files.directory / ADDED_TOKENS).read_text(encoding="utf-8"))
        (out / ADDED_TOKENS).write_text(json.dumps({k: new[v] for k, v in added.items()}, ensure_ascii=False,
                                                   indent=2) + "\n", encoding="utf-8")
        written.append(ADDED_TOKENS)
    if files.has(SPECIAL_TOKENS_MAP):  # token strings only: nothing to renumber
        shutil.copyfile(files.directory / SPECIAL_TOKENS_MAP, out / SPECIAL_TOKENS_MAP)
        written.append(SPECIAL_TOKENS_MAP)
    return written


@contextlib.contextmanager
def trimmed_tokenizer_dir(base_dir: Path, base_config: dict, kept: list[int]):
    """A temporary directory holding the trimmed tokenizer files and config.json (for models that have no
    tokenizer files yet: a run's pruned model), so they load with AutoTokenizer exactly as the export's will."""
    files = base_tokenizer_files(base_dir, base_config)
    with tempfile.TemporaryDirectory(prefix="bgeprune-tokenizer-") as tmp:
        write_trimmed(files, kept, Path(tmp))
        shutil.copyfile(Path(base_dir) / CONFIG, Path(tmp) / CONFIG)  # AutoTokenizer may read model_type
        yield Path(tmp)
