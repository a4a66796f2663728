"""The models `bgeprune bench` compares: load any of them the same way, describe their shape and size.

A model is given as
  - an exported model directory (`bgeprune export-hf`; its weights are checked against its manifest),
  - a run's pruned model (`RUN` or `RUN/pruned`; may be non-uniform, which no stock config describes),
  - any Hugging Face model directory, hub id, or `builtin:NAME`.
Weights load strictly (no missing or random weights). bge-m3-style models bring their sparse and
ColBERT heads. When the model came from bgeprune, `layout` is the architecture it kept of its base.

Example:
    python -c "from bgeprune_cli.bench.models import load_bench_model as l; print(l('builtin:tiny-bert').arch)"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..filenames import CONFIG, LINEAGE, TORCH_WEIGHTS, WEIGHTS
from ..models import m3
from ..artifacts import MANIFEST, read_artifact
from ..models.loading import load_model, load_tokenizer, max_tokens, read_config, resolve_base
from ..models.st_files import Pooling, read_pooling
from ..errors import ArtifactError
from ..m3_encoder import M3Output, encode_batch
from ..pruning.masks import Layout
from ..models.families import adapter_for
from ..pruning.slicing import build_model
from ..pruning.sources import RunContext

WEIGHT_FILES = (WEIGHTS, TORCH_WEIGHTS, m3.COLBERT_FILE, m3.SPARSE_FILE, m3.HEADS_FILE)
WHAT_IS_A_MODEL = ("pass an exported model directory (bgeprune export-hf), a run's pruned model (RUN or "
                   "RUN/pruned), a Hugging Face model directory or hub id, or builtin:NAME")


def label_of(spec: str) -> str:
    """A short name for tables: the last path component, without `builtin:`."""
    name = spec.rstrip("/").split("/")[-1]
    return name.removeprefix("builtin:") or spec


@dataclass
class BenchModel:
    spec: str  # as the user gave it
    kind: str  # "hf-model" (a bgeprune export), "pruned-model" (a run's pruned model) or "model"
    directory: Path
    model: torch.nn.Module
    tokenizer: object
    pooling: Pooling
    heads: m3.M3Heads | None
    weight_files: list[Path]
    layout: Layout | None = None  # what was kept of the base (bgeprune models only)
    device: str = "cpu"
    special: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return label_of(self.spec)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def attn_implementation(self) -> str:
        return str(getattr(self.model.config, "_attn_implementation", None) or "default")

    @property
    def arch(self) -> list[dict]:
        """Per encoder layer: attention heads, head size and FFN width, read from the modules themselves."""
        adapter = adapter_for(self.model.config.model_type)
        layers = []
        for layer in self.model.get_submodule(adapter.layers):
            attention = layer.get_submodule(adapter.self_attention)
            head_dim = int(attention.attention_head_size)
            layers.append({"heads": attention.query.out_features // head_dim, "head_dim": head_dim,
                           "ffn": layer.get_submodule("intermediate.dense").out_features})
        return layers

    @property
    def hidden(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    def params(self) -> dict[str, int]:
        """Parameter counts: embeddings, encoder layers, the rest (pooler), bge-m3 heads, total."""
        split = {"embeddings": 0, "encoder": 0, "other": 0}
        for name, tensor in self.model.state_dict().items():
            part = name.split(".")[0]
            split[part if part in split else "other"] += tensor.numel()
        split["m3_heads"] = sum(t.numel() for t in self.heads.tensors().values()) if self.heads else 0
        split["total"] = sum(split.values())
        return split

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files)

    @torch.inference_mode()
    def encode(self, texts: list[str], max_length: int, batch_size: int, with_heads: bool,
               progress=None) -> M3Output:
        """Dense embeddings (and with bge-m3 heads lexical weights and ColBERT vectors) in input order.

        Texts run longest first so batches hold similar lengths (less padding), as sentence-transformers does.
        """
        max_length = min(max_length, max_tokens(self.model.config.to_dict(), self.tokenizer))
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        parts = []
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start:start + batch_size]]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            if with_heads and self.heads is not None:
                out = encode_batch(self.model, self.heads, batch, self.pooling, self.special)
                parts.append(M3Output(out.dense.cpu(), out.lexical, [v.cpu() for v in out.colbert]))
            else:
                states = self.model(**batch).last_hidden_state.float()
                parts.append(M3Output(self.pooling.pool(states, batch["attention_mask"]).cpu(),
                                      [{} for _ in chunk], []))
            if progress is not None:
                progress.advance()
        joined = M3Output.concat(parts)
        inverse = sorted(range(len(order)), key=lambda k: order[k])
        return M3Output(joined.dense[inverse], [joined.lexical[k] for k in inverse],
                        [joined.colbert[k] for k in inverse] if joined.colbert else [])


def _pruned_model_dir(path: Path) -> Path | None:
    """The pruned-model artifact behind `path` (itself or RUN/pruned), if that is what it is."""
    for candidate in (path, path / "pruned"):
        manifest = candidate / MANIFEST
        if manifest.is_file():
            try:
                if json.loads(manifest.read_text()).get("kind") == "pruned-model":
                    return candidate
            except ValueError:
                return None  # read_artifact below reports the corrupt manifest
    return None


def _load_pruned(path: Path, spec: str, dtype, attn: str | None) -> BenchModel:
    artifact = read_artifact(path, "pruned-model", needed_by="bench")
    ctx = RunContext.of(artifact)
    layout = Layout.from_json(artifact.read_json("layout.json"))
    state = load_file(str(artifact.file(WEIGHTS)))
    model = build_model(artifact.read_json(CONFIG), {k: v.float() for k, v in state.items()}, ctx.adapter,
                        layout.head_dim, attn).to(dtype)
    heads, files = None, [artifact.path / WEIGHTS]
    if artifact.has_file(m3.HEADS_FILE):
        heads = m3.M3Heads.from_tensors(load_file(str(artifact.file(m3.HEADS_FILE))))
        files.append(artifact.path / m3.HEADS_FILE)
    tokenizer = load_tokenizer(ctx.base_dir)
    return BenchModel(spec, "pruned-model", artifact.path, model, tokenizer, ctx.pooling, heads, files, layout)


def _load_directory(directory: Path, spec: str, dtype, attn: str | None) -> BenchModel:
    if not (directory / CONFIG).is_file():
        raise ArtifactError(f"{directory} is not a model: it has no config.json; {WHAT_IS_A_MODEL}.")
    kind, layout = "model", None
    if (directory / MANIFEST).is_file():  # a bgeprune export: check the weights are the ones it wrote
        artifact = read_artifact(directory, "hf-model", needed_by="bench")
        for name in WEIGHT_FILES:
            if artifact.has_file(name):
                artifact.file(name)
        kind = "hf-model"
    if (directory / LINEAGE).is_file():
        layout = Layout.from_json(json.loads((directory / LINEAGE).read_text())["layout"])
    files = [directory / n for n in WEIGHT_FILES if (directory / n).is_file()]
    if not any(f.name in (WEIGHTS, TORCH_WEIGHTS) for f in files) and not any(
            directory.glob("model-*.safetensors")):
        raise ArtifactError(f"{directory} is not a model: it has config.json but no weights "
                            f"(model.safetensors); {WHAT_IS_A_MODEL}.")
    files += sorted(directory.glob("model-*.safetensors"))
    model = load_model(directory, attn, dtype)
    heads = m3.load_heads(directory, read_config(directory)["hidden_size"])
    return BenchModel(spec, kind, directory, model, load_tokenizer(directory), read_pooling(directory), heads,
                      files, layout)


def load_bench_model(spec: str, dtype: torch.dtype = torch.float32, attn: str | None = None,
                     device: str = "cpu") -> BenchModel:
    path = Path(spec).expanduser()
    pruned = _pruned_model_dir(path) if path.is_dir() else None
    if pruned is not None:
        loaded = _load_pruned(pruned, spec, dtype, attn)
    else:
        directory = resolve_base(spec)  # local dir, hub id or builtin; a missing one is an environment error
        if (directory / MANIFEST).is_file() and not (directory / CONFIG).is_file():
            kind = json.loads((directory / MANIFEST).read_text()).get("kind", "?")
            raise ArtifactError(f"{directory} is a bgeprune '{kind}' artifact, not a model; {WHAT_IS_A_MODEL}.")
        loaded = _load_directory(directory, spec, dtype, attn)
    loaded.model.to(device)
    if loaded.heads is not None:
        loaded.heads = loaded.heads.to(device)
        loaded.special = m3.special_token_ids(loaded.tokenizer)
    loaded.device = device
    return loaded
