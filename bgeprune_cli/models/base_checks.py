"""A base model directory checked once, before any work: what every reader of a base relies on.

`config.json` names a family bgeprune prunes and as many layers as the weights hold; `modules.json`
names folders inside the directory; the tokenizer files are there and turn the probe text into real
ids (transformers builds a tokenizer with an empty vocabulary from a directory without them, and a
run would distil on `<unk>` alone). Each failure is a bad model file (exit 3) naming what to restore.
`bgeprune check` and every stage that reads a base (through `models/recipe_base.RecipeBase`) run it.

Example:
    python -c "from bgeprune_cli.models.base_checks import check_base; check_base('out/smoke')"
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from ..errors import BadModelFiles, UsageError
from ..filenames import TOKENIZER_VOCABULARY_FILES
from .loading import check_weights, read_config
from .probe import probe_texts
from .st_files import read_modules

MAX_UNKNOWN = 0.5  # of the probe text's tokens; a real tokenizer gives a handful of <unk> at most
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def check_base(directory: Path | str) -> None:
    """Raise BadModelFiles for a base that loads but cannot be pruned or trained on correctly."""
    directory = Path(directory)
    _check(str(directory.resolve()), _stamp(directory))


def _stamp(directory: Path) -> tuple:
    """What the checks read, by name and mtime: a base edited in place is checked again."""
    names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    return tuple((n, (directory / n).stat().st_mtime_ns) for n in names)


@functools.lru_cache(maxsize=16)
def _check(directory: str, stamp: tuple) -> None:
    path = Path(directory)
    config = read_config(path)
    _family(config, path)
    _layers_match_weights(path, config)
    read_modules(path)
    _tokenizer_gives_real_ids(path)


def _family(config: dict, directory: Path) -> None:
    from .families import adapter_for

    try:
        adapter_for(config["model_type"])
    except UsageError as exc:
        raise BadModelFiles(f"{directory}/config.json: {exc}; bgeprune prunes BERT-family encoders (their "
                            f"config.json names one of those model types).") from None


def _layers_match_weights(directory: Path, config: dict) -> None:
    from safetensors import safe_open

    files = [f for f in check_weights(directory) if f.suffix == ".safetensors"]
    if not files:
        return  # a .bin checkpoint: transformers' strict loading reports the difference
    layers: set[int] = set()
    for path in files:
        with safe_open(str(path), "pt") as handle:
            layers |= {int(m.group(1)) for key in handle.keys() if (m := _LAYER.search(key))}
    want = config["num_hidden_layers"]
    if layers and len(layers) != want:
        raise BadModelFiles(f"{directory}/config.json says num_hidden_layers = {want}, but the weights hold "
                            f"{len(layers)} layers; restore the config.json that came with these weights.")


def _tokenizer_gives_real_ids(directory: Path) -> None:
    present = [name for name in TOKENIZER_VOCABULARY_FILES if (directory / name).is_file()]
    expected = "tokenizer.json (or sentencepiece.bpe.model / vocab.txt with tokenizer_config.json)"
    if not present:
        raise BadModelFiles(f"{directory} has no tokenizer files (expected {expected}); copy them from the model "
                            f"it came from, beside config.json.")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:
        raise BadModelFiles(f"{directory}: its tokenizer files ({', '.join(present)}) do not load "
                            f"({exc.__class__.__name__}: {str(exc).strip()[:200]}); restore them from the model "
                            f"it came from.") from None
    ids = [i for row in tokenizer(probe_texts(), add_special_tokens=False)["input_ids"] for i in row]
    unknown = sum(i == tokenizer.unk_token_id for i in ids)
    if not ids or unknown > MAX_UNKNOWN * len(ids):
        share = f"{unknown:,} of {len(ids):,}" if ids else "none"
        raise BadModelFiles(f"{directory}'s tokenizer ({', '.join(present)}) turns the probe text into <unk> "
                            f"({share} tokens unknown): its vocabulary is missing or not this model's. Copy "
                            f"{expected} from the model it came from.")
