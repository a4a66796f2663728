"""sentence-transformers files: read a model's pooling setup, write an export's, one place for both.

A model directory may describe its sentence-transformers pipeline in `modules.json` (each module a
type and a sub-folder), `1_Pooling/config.json`, `sentence_bert_config.json` and
`config_sentence_transformers.json`. These come from models we did not write, so every path in
`modules.json` must stay inside the directory, and every file must parse; anything else is a
`BadModelFiles` error (exit 3) naming the file and key.

Pooling configs exist in two formats: the legacy one (`word_embedding_dimension`,
`pooling_mode_cls_token`, `pooling_mode_mean_tokens`, ...) that every sentence-transformers
release reads, and the one 5.7+ writes (`embedding_dimension`, `pooling_mode: "cls"`). Both are
read; exports are written in the legacy format, which 2.x through 6.x all load.

Example:
    python -c "from bgeprune_cli.models.st_files import read_pooling; print(read_pooling('out/smoke'))"
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import unsafe_member_reason, write_json
from ..errors import BadModelFiles
from ..filenames import CONFIG, MODULES, ST_CONFIG, ST_MODEL_CONFIG

POOLING_MODES = ("cls", "mean")  # what bgeprune's pooling reproduces exactly
# Legacy boolean keys -> the mode name sentence-transformers 5.7+ uses.
_LEGACY_MODE_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                     "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                     "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class Pooling:
    """How a model turns token states into one embedding."""

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


@dataclass(frozen=True)
class Prompts:
    """Text a model expects before queries and passages (multilingual-e5: "query: " and "passage: ").

    Read from `config_sentence_transformers.json`'s `prompts`; "" where the model has none. Queries use
    the `query` (or `search_query`) prompt, passages the `passage` (or `document`, `search_document`,
    `corpus`) prompt; a `default_prompt_name` fills whichever is missing.
    """

    query: str = ""
    passage: str = ""

    def queries(self, texts: list[str]) -> list[str]:
        return [self.query + t for t in texts] if self.query else list(texts)

    def passages(self, texts: list[str]) -> list[str]:
        return [self.passage + t for t in texts] if self.passage else list(texts)


_QUERY_PROMPTS = ("query", "search_query")
_PASSAGE_PROMPTS = ("passage", "document", "search_document", "corpus")


def read_prompts(directory: Path) -> Prompts:
    path = Path(directory) / ST_MODEL_CONFIG
    if not path.is_file():
        return Prompts()
    config = read_json_file(path)
    prompts = config.get("prompts") if isinstance(config, dict) else None
    if not prompts:
        return Prompts()
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise BadModelFiles(f"{path}: 'prompts' must map prompt names to strings, not {prompts!r}.")
    default = prompts.get(config.get("default_prompt_name") or "", "")

    def pick(names: tuple[str, ...]) -> str:
        return next((prompts[n] for n in names if n in prompts), default)

    return Prompts(pick(_QUERY_PROMPTS), pick(_PASSAGE_PROMPTS))


def read_json_file(path: Path) -> dict | list:
    """A JSON file of a model directory; unreadable or malformed is BadModelFiles naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadModelFiles(f"{path} is not UTF-8 text; restore it from the model it came from.") from None
    except ValueError as exc:
        raise BadModelFiles(f"{path} is not valid JSON ({exc}); restore it from the model it came from.") from None


def read_modules(directory: Path) -> list[dict]:
    """`modules.json` with every entry checked: a type, and a path that stays inside `directory`."""
    path = Path(directory) / MODULES
    if not path.is_file():
        return []
    modules = read_json_file(path)
    if not isinstance(modules, list):
        raise BadModelFiles(f"{path} must be a JSON list of modules; restore it from the model it came from.")
    for number, module in enumerate(modules):
        where = f"{path}: [{number}]"
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise BadModelFiles(f"{where} must be an object with a 'type' string.")
        sub = module.get("path", "")
        reason = "is not a string" if not isinstance(sub, str) else \
            (unsafe_member_reason(directory, sub) if sub else None)
        if reason:
            raise BadModelFiles(f"{where}.path {sub!r} {reason}; a module's folder must be inside the model "
                                f"directory. Refusing to read or write anything it names.")
    return modules


def module_kind(module: dict) -> str:
    return module["type"].rsplit(".", 1)[-1]


def pooling_config_path(directory: Path) -> Path | None:
    for module in read_modules(directory):
        if module_kind(module) == "Pooling":
            return Path(directory) / module.get("path", "") / CONFIG
    return None


def pooling_mode(config: dict, where: Path) -> str:
    """The pooling mode of a Pooling config in either format."""
    mode = config.get("pooling_mode")
    if mode is None:
        active = [name for key, name in _LEGACY_MODE_KEYS.items() if config.get(key)]
        mode = active[0] if len(active) == 1 else active or "mean"  # sentence-transformers' own default
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLING_MODES:
        raise BadModelFiles(f"{where}: pooling {mode!r} is not supported (bgeprune reproduces CLS and mean "
                            f"pooling exactly); its Pooling config is {config}.")
    return mode


def read_pooling(directory: Path) -> Pooling:
    """CLS + normalise (bge-m3's choice) unless the model's sentence-transformers files say otherwise."""
    directory = Path(directory)
    modules = read_modules(directory)
    mode, normalize, max_len = "cls", True, 512
    if modules:
        normalize = any(module_kind(m) == "Normalize" for m in modules)
        config_path = pooling_config_path(directory)
        if config_path is not None:
            if not config_path.is_file():
                raise BadModelFiles(f"{config_path} is missing, but {directory / MODULES} names a Pooling module "
                                    f"there; restore it from the model it came from.")
            mode = pooling_mode(read_json_file(config_path), config_path)
    if (directory / ST_CONFIG).is_file():
        config = read_json_file(directory / ST_CONFIG)
        max_len = config.get("max_seq_length", max_len) if isinstance(config, dict) else max_len
    if not isinstance(max_len, int) or max_len < 1:
        raise BadModelFiles(f"{directory / ST_CONFIG}: max_seq_length must be a positive integer, not {max_len!r}.")
    return Pooling(mode, normalize, max_len)


def legacy_pooling_config(config: dict, dim: int, where: Path) -> dict:
    """`config` (either format) in the legacy format every sentence-transformers release loads, for `dim`.

    A legacy config is copied with the new dimension; a 5.7+ one is translated key by key, keeping
    its other settings (e.g. `include_prompt`).
    """
    mode = pooling_mode(config, where)
    if "pooling_mode" not in config and "embedding_dimension" not in config:
        return {**config, "word_embedding_dimension": dim}
    rest = {k: v for k, v in config.items() if k not in ("pooling_mode", "embedding_dimension")}
    return {"word_embedding_dimension": dim, "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, **rest}


def write_default_files(directory: Path, dim: int, pooling: str, max_seq_length: int, normalize: bool = True) -> None:
    """modules.json, the Pooling config, Normalize and the two sentence-transformers config files."""
    def dump(path: Path, data) -> None:  # key order as sentence-transformers writes them
        path.write_text(json.dumps(data, indent=2) + "\n")

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    dump(directory / MODULES, modules)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    dump(directory / "1_Pooling" / CONFIG, {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    dump(directory / ST_CONFIG, {"max_seq_length": max_seq_length, "do_lower_case": False})
    dump(directory / ST_MODEL_CONFIG, {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def write_export_files(base_dir: Path, out: Path, dim: int, pooling: Pooling) -> None:
    """The base's sentence-transformers setup with the export's dimension; bge-m3 style if it has none."""
    modules = read_modules(base_dir)
    if not modules:
        write_default_files(out, dim, pooling.mode, pooling.max_seq_length, pooling.normalize)
        return
    for module in modules:
        kind = module_kind(module)
        if kind not in _SUPPORTED_MODULES:
            raise BadModelFiles(f"{base_dir / MODULES}: sentence-transformers module {kind} is not supported by "
                                f"export-hf (its weights depend on the hidden size).")
    for name in (MODULES, ST_CONFIG, ST_MODEL_CONFIG):
        if (base_dir / name).is_file():
            read_json_file(base_dir / name)  # refuse a malformed file rather than copy it
            shutil.copyfile(base_dir / name, out / name)
    for module in modules:
        kind, sub = module_kind(module), module.get("path", "")
        if kind == "Transformer":
            continue
        (out / sub).mkdir(parents=True, exist_ok=True)
        if kind == "Pooling":
            source = base_dir / sub / CONFIG
            write_json(out / sub / CONFIG, legacy_pooling_config(read_json_file(source), dim, source))
