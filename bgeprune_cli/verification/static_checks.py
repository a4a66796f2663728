"""Static checks of an exported model directory, each with its own message (used by `verify`, and by
`push` before anything leaves the machine; `static_checks` runs them all, in verify's order).

These read files only (no model forward pass): required files, the manifest's hashes, finite
weights, config-vs-tensor agreement (which also catches renamed and missing keys), tensors
that are identity matrices (a predecessor "fixed" missing `attention.output.dense` that way),
bge-m3's sparse/ColBERT head files, and the config fields serving engines (TEI, vLLM) read.

Example:
    bgeprune verify out/smoke
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..artifacts import Artifact, sha256_file
from ..errors import ArtifactError, os_error_in
from ..filenames import CONFIG, FAST_TOKENIZER, MODULES, TOKENIZER_FILES, TOKENIZER_VOCABULARY_FILES, WEIGHTS
from ..models import m3
from ..models.st_files import pooling_config_path


@dataclass
class Check:
    name: str
    status: str  # "pass", "fail", "skip", or "info" (reported, never fails verify)
    message: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def static_checks(out: Path, artifact: Artifact | None, lineage: dict | None) -> tuple[list[Check], dict]:
    """Every static check of `out` in verify's order (files, manifest, finite, config-shapes, identity,
    serving-config, m3-heads), and the weights they read ({} when there are none): verify's later checks
    reuse them instead of reading the file again."""
    listed = {e["path"] for e in artifact.manifest["files"]} if artifact else set()
    checks = [check_files(out, [f for f in TOKENIZER_FILES if f in listed] or None), check_manifest(out, artifact)]
    weights: dict[str, torch.Tensor] = {}
    if (out / CONFIG).is_file() and (out / WEIGHTS).is_file():
        try:
            weights = load_file(str(out / WEIGHTS))
        except SafetensorError as exc:  # truncated or not safetensors at all: a failed check, not a crash
            if os_error_in(exc) is not None:  # the disk's problem, not the file's: exit 4 as everywhere
                raise
            checks.append(Check("finite", "fail", f"{WEIGHTS} cannot be read as safetensors ({exc}): truncated or "
                                "overwritten; the manifest check says whether it changed after export"))
        else:
            checks += [check_finite(weights), check_config_shapes(out), check_identity(weights)]
        checks.append(check_serving_config(out))
    expect_heads = bool((lineage or {}).get("m3_heads") or (artifact and artifact.info.get("m3_heads")))
    checks.append(check_m3_heads(out, expect_heads))
    return checks, weights


def _examples(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def check_files(out: Path, expected_tokenizer: list[str] | None) -> Check:
    """The files every loader needs; the tokenizer files the base had, when the lineage says."""
    missing = [f for f in (CONFIG, WEIGHTS, MODULES) if not (out / f).is_file()]
    tokenizer = expected_tokenizer or ["tokenizer_config.json"]
    missing += [f for f in tokenizer if not (out / f).is_file()]
    if not any((out / f).is_file() for f in TOKENIZER_VOCABULARY_FILES):
        missing.append("one of " + "/".join(TOKENIZER_VOCABULARY_FILES))
    pooling = pooling_config_path(out)
    if pooling is not None and not pooling.is_file():
        missing.append(pooling.relative_to(out).as_posix())
    if missing:
        tok = [m for m in missing if m in tokenizer or m.startswith("one of")]
        hint = " (tokenizer file: AutoTokenizer and SentenceTransformer cannot load it as the base did)" if tok else ""
        return Check("files", "fail", f"missing file(s): {', '.join(missing)}{hint}", {"missing": missing})
    return Check("files", "pass", "config, weights, tokenizer and sentence-transformers files present")


def check_manifest(out: Path, artifact: Artifact | None) -> Check:
    """Every file the manifest lists (paths already checked to stay inside by `read_artifact`) is unchanged."""
    if artifact is None:
        return Check("manifest", "skip", "no manifest.json: verified as a foreign model (not written by bgeprune "
                     "export-hf), so no file is checked against a recorded hash")
    entries = artifact.manifest["files"]
    changed = [e["path"] for e in entries if not (out / e["path"]).is_file()
               or (out / e["path"]).stat().st_size != e["size"] or sha256_file(out / e["path"]) != e["sha256"]]
    if changed:
        return Check("manifest", "fail", f"file(s) differ from the sha256 in manifest.json (changed after export): "
                     f"{_examples(changed)}", {"changed": changed})
    return Check("manifest", "pass", f"{len(entries)} files match manifest.json")


def read_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(weights), "pt") as handle:
        return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}


def check_finite(state: dict[str, torch.Tensor]) -> Check:
    bad = sorted(k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        return Check("finite", "fail", f"NaN or Inf values in {len(bad)} tensor(s): {_examples(bad)}", {"tensors": bad})
    return Check("finite", "pass", "every weight is finite")


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The tensors a stock model built from this config has (on the meta device: no memory)."""
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.for_model(**config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_config_shapes(out: Path) -> Check:
    config = json.loads((out / CONFIG).read_text())
    try:
        expected = expected_shapes(config)
    except Exception as exc:  # an invalid config (e.g. hidden not divisible by heads)
        return Check("config-shapes", "fail", f"config.json does not build a model: {exc}")
    actual = read_shapes(out / WEIGHTS)
    missing = set(expected) - set(actual)
    unexpected = set(actual) - set(expected)
    mismatched = {k: (expected[k], actual[k]) for k in set(expected) & set(actual) if expected[k] != actual[k]}
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) the model needs are absent, so AutoModel would initialise them "
                        f"at random: {_examples(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) have names the model does not use (renamed keys?), so "
                        f"they would be ignored: {_examples(unexpected)}")
    if mismatched:
        key = sorted(mismatched)[0]
        sizes = {k: config.get(k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                             "intermediate_size")}
        problems.append(f"config.json sizes disagree with {len(mismatched)} tensor shape(s) ({sizes}): {key} is "
                        f"{mismatched[key][1]} but the config implies {mismatched[key][0]}")
    if problems:
        return Check("config-shapes", "fail", "; ".join(problems),
                     {"missing": sorted(missing), "unexpected": sorted(unexpected),
                      "mismatched": {k: list(map(list, v)) for k, v in mismatched.items()}})
    return Check("config-shapes", "pass", f"config.json agrees with all {len(actual)} tensor shapes")


def check_identity(state: dict[str, torch.Tensor]) -> Check:
    """No square weight matrix may be the identity: trained projections never are."""
    found = sorted(k for k, t in state.items()
                   if k.endswith("weight") and t.dim() == 2 and t.shape[0] == t.shape[1] > 1
                   and torch.equal(t.float(), torch.eye(t.shape[0])))
    if found:
        return Check("identity", "fail", f"{len(found)} weight(s) are exact identity matrices, not trained weights "
                     f"(an 'identity fix' for missing weights?): {_examples(found)}", {"tensors": found})
    return Check("identity", "pass", "no weight matrix is an identity placeholder")


def check_m3_heads(out: Path, expected: bool) -> Check:
    """bge-m3's head files: both present, plain state dicts, shaped for this hidden size.

    `expected` is whether the export should have them (its lineage says the base had them); a
    directory with either file is checked as bge-m3 style too.
    """
    if not expected and not m3.has_heads(out):
        return Check("m3-heads", "skip", "not a bge-m3-style model (no sparse/ColBERT head files)")
    missing = [name for name in m3.HEAD_FILES if not (out / name).is_file()]
    if missing:
        return Check("m3-heads", "fail", f"missing {', '.join(missing)}: {m3.RANDOM_HEADS_WARNING}. Its lineage "
                     f"says the model has them; a copy made with SentenceTransformer.save_pretrained drops them, so "
                     f"copy both files over from the original export (or export again with 'bgeprune export-hf').",
                     {"missing": missing})
    hidden = json.loads((out / CONFIG).read_text()).get("hidden_size") if (out / CONFIG).is_file() else None
    try:
        heads = m3.load_heads(out, hidden)
    except ArtifactError as exc:
        return Check("m3-heads", "fail", str(exc))
    return Check("m3-heads", "pass", f"{m3.COLBERT_FILE} ({heads.hidden}->{heads.colbert_linear.out_features}) and "
                 f"{m3.SPARSE_FILE} ({heads.hidden}->1) load as plain state dicts ({heads.file_dtype})")


class ServingConfig(BaseModel):
    """The config.json fields text-embeddings-inference and vLLM read to build an encoder (all required)."""

    model_config = ConfigDict(extra="allow")
    architectures: list[Literal["XLMRobertaModel", "BertModel"]] = Field(min_length=1)
    model_type: Literal["xlm-roberta", "bert"]
    vocab_size: PositiveInt
    hidden_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    intermediate_size: PositiveInt
    hidden_act: str
    max_position_embeddings: PositiveInt
    type_vocab_size: PositiveInt
    layer_norm_eps: float
    pad_token_id: NonNegativeInt
    position_embedding_type: Literal["absolute"] = "absolute"


def check_serving_config(out: Path) -> Check:
    """Serving engines parse config.json strictly, need tokenizer.json, and never run remote code."""
    path = out / CONFIG
    if not path.is_file():
        return Check("serving-config", "skip", "no config.json")
    config = json.loads(path.read_text())
    problems = []
    try:
        parsed = ServingConfig.model_validate(config)
        if parsed.hidden_size % parsed.num_attention_heads:
            problems.append(f"hidden_size {parsed.hidden_size} is not a multiple of num_attention_heads "
                            f"{parsed.num_attention_heads}")
    except ValidationError as exc:
        problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    if "auto_map" in config:
        problems.append("auto_map is set: engines would need trust_remote_code for a stock architecture")
    if not (out / FAST_TOKENIZER).is_file():
        problems.append("no tokenizer.json (text-embeddings-inference needs the fast-tokenizer file)")
    if problems:
        return Check("serving-config", "fail", "text-embeddings-inference / vLLM could not serve it: "
                     + "; ".join(problems), {"problems": problems})
    return Check("serving-config", "pass", "config.json has every field text-embeddings-inference and vLLM read; "
                 "tokenizer.json present")
