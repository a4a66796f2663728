"""verify's `tokenizer` check of a trimmed export: its tokenizer files agree, and map back to the base's ids.

For an export with `vocab_map.json` (the vocabulary was trimmed, so its tokenizer files were rewritten):
  1. on the probe texts and the trimming corpus's sample, `tokenizer.json` as written (what transformers 4
     and serving engines run), `AutoTokenizer` (transformers 5's own pipeline) and, when present,
     `sentencepiece.bpe.model` (the SentencePiece library, fairseq ids) give identical ids, and
     `vocab.txt` lists tokenizer.json's vocabulary in id order;
  2. vocab_map.json holds exactly the kept ids the run's masks artifact recorded, and on the texts that
     the base tokenizes with kept ids only ("covered": the whole sample when min_count is 1) the export's
     ids mapped through it equal the base's ids, per generation (file against file, AutoTokenizer
     against AutoTokenizer).
The covered texts are what verify's parity then runs on, against the untrimmed masked model.

Example:
    bgeprune verify out/vocab-smoke        # ... tokenizer  pass  3 tokenizers agree on 80 texts; ...
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BgepruneError
from ..filenames import FAST_TOKENIZER, SPM_MODEL, VOCAB_SAMPLE
from ..models.loading import load_tokenizer
from ..models.probe import probe_texts
from ..models.tokenizers.files import read_tokenizer_files
from ..models.tokenizers.sentencepiece_model import encode_ids
from ..models.tokenizers.vocab_map import VocabMap
from ..pruning.sources import read_layout
from .static_checks import Check


def _ids(out: Path, special: bool = False) -> dict:
    """Per tokenizer of a directory, a function texts -> ids, without or with the special tokens the
    post-processor adds (sentencepiece.bpe.model adds none: only without)."""
    from tokenizers import Tokenizer

    as_written = Tokenizer.from_file(str(out / FAST_TOKENIZER))
    as_written.no_padding()  # token sequences are compared; a padding length set in the file is not a token
    as_written.no_truncation()
    auto = load_tokenizer(out)
    found = {"tokenizer.json":
             lambda texts: [e.ids for e in as_written.encode_batch(texts, add_special_tokens=special)],
             "AutoTokenizer": lambda texts: auto(texts, add_special_tokens=special)["input_ids"]}
    if (out / SPM_MODEL).is_file() and not special:
        found[SPM_MODEL] = lambda texts: encode_ids(out / SPM_MODEL, texts)
    return found


def _example(texts: list[str], a: list, b: list) -> str:
    i = next(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"e.g. {texts[i][:60]!r}: {a[i][:12]} vs {b[i][:12]}"


def check_tokenizer(out: Path, vmap: VocabMap | None, masks_art, base_dir: Path | None) -> tuple[Check, list[str]]:
    """The check, and the covered texts parity should run on (empty: use the probe texts)."""
    if vmap is None:
        return Check("tokenizer", "skip", "vocabulary not trimmed: the tokenizer files are the base's, copied"), []
    sample = masks_art.read_json(VOCAB_SAMPLE) if masks_art is not None and masks_art.has_file(VOCAB_SAMPLE) else []
    texts = probe_texts() + [t for t in sample if isinstance(t, str)]
    try:
        read_tokenizer_files(out)  # vocab.txt against tokenizer.json; sentencepiece.bpe.model's fairseq ids
        results = {name: fn(texts) for name, fn in _ids(out).items()}
        with_special = {name: fn(texts) for name, fn in _ids(out, special=True).items()}
    except BgepruneError as exc:
        return Check("tokenizer", "fail", f"the export's tokenizer files do not load together: {exc}"), []
    names = list(results)
    for found, what in ((results, ""), (with_special, " with special tokens (the post-processor's ids)")):
        first = next(iter(found))
        for name in list(found)[1:]:
            if found[name] != found[first]:
                return Check("tokenizer", "fail", f"{name} and {first} give different ids{what} "
                             f"({_example(texts, found[name], found[first])})", {"files": names}), []
    padding = json.loads((out / FAST_TOKENIZER).read_text(encoding="utf-8")).get("padding")
    pad_token_id = load_tokenizer(out).pad_token_id
    if isinstance(padding, dict) and padding.get("pad_id") != pad_token_id:
        return Check("tokenizer", "fail", f"tokenizer.json pads with id {padding.get('pad_id')}, but the pad token "
                     f"is id {pad_token_id}", {"files": names}), []
    agree = f"{', '.join(names)} agree on {len(texts)} texts"
    if base_dir is None:
        return Check("tokenizer", "pass", f"{agree}; the run is gone, so ids were not compared with the base's"), []
    recorded = read_layout(masks_art).vocab
    if recorded != vmap.new_to_old:  # the run's kept ids are the source of truth, not the file being checked
        return Check("tokenizer", "fail", f"vocab_map.json differs from the kept token ids {masks_art.path} recorded "
                     f"({len(vmap.new_to_old)} vs {len(recorded or [])} ids); export again."), []
    base, base_special = _ids(base_dir), _ids(base_dir, special=True)
    kept = set(recorded)
    covered, details = None, {"texts": len(texts), "sample": len(sample)}
    for name, special in (("tokenizer.json", False), ("AutoTokenizer", False), ("tokenizer.json", True),
                          ("AutoTokenizer", True)):
        base_ids = (base_special if special else base)[name](texts)
        mask = [all(i in kept for i in ids) for ids in base_ids]
        covered = mask if covered is None else [a and b for a, b in zip(covered, mask)]
        mapped = [[vmap.new_to_old[i] for i in ids] for ids in (with_special if special else results)[name]]
        wrong = [k for k, ok in enumerate(mask) if ok and mapped[k] != base_ids[k]]
        if wrong:
            k = wrong[0]
            return Check("tokenizer", "fail", f"{len(wrong)} text(s) the base tokenizes with kept tokens only tokenize "
                         f"differently after trimming ({name}{', with special tokens' if special else ''}), "
                         f"e.g. {texts[k][:60]!r}: base {base_ids[k][:12]}, "
                         f"export mapped back {mapped[k][:12]}", {**details, "wrong": len(wrong)}), []
    chosen = [t for t, ok in zip(texts, covered) if ok]
    if not chosen:
        return Check("tokenizer", "fail", f"{agree}, but none of them uses kept tokens only, so nothing shows that the "
                     f"trimmed tokenizer reproduces the base's ids (was the corpus sample lost?)", details), []
    in_sample = sum(covered[len(texts) - len(sample):]) if sample else 0
    details.update(covered=len(chosen), covered_sample=in_sample)
    return Check("tokenizer", "pass", f"{agree}; on the {len(chosen)} that use kept tokens only ({in_sample} of "
                 f"{len(sample)} from the trimming corpus) the ids map through vocab_map.json to the base's",
                 details), chosen
