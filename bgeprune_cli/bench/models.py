"""The models `bgeprune bench` compares: load any of them the same way, describe their shape and size.

A model is given as
  - an exported model directory (`bgeprune export-hf`; its weights are checked against its manifest),
  - a run's pruned model (`RUN` or `RUN/pruned`; may be non-uniform, which no stock config describes),
  - any Hugging Face model directory, hub id, or `builtin:NAME`.
Weights load strictly (no missing or random weights). bge-m3-style models bring their sparse and
ColBERT heads. When the model came from bgeprune, `layout` is the architecture it kept of its base.
A model runs on a backend: `torch`, or an ONNX graph of it (`onnx`, `onnx-int8`: `backends.py`),
which shares the PyTorch model's description (architecture, parameters, tokenizer, pooling).

Example:
    python -c "from bgeprune_cli.bench.models import load_bench_model as l; print(l('builtin:tiny-bert').arch)"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from ..artifacts import MANIFEST, Artifact, read_artifact
from ..errors import ArtifactError
from ..filenames import CONFIG, LINEAGE, TORCH_WEIGHTS, WEIGHTS
from ..models import m3
from ..models.encoding import encode
from ..models.families import adapter_for
from ..models.loading import load_model, load_tokenizer, read_config, resolve_base
from ..models.m3 import M3Output
from ..models.recipe_base import RecipeBase
from ..models.st_files import Pooling, Prompts, read_pooling, read_prompts
from ..models.tokenizers.trim import trimmed_tokenizer_dir
from ..models.tokenizers.vocab_map import VocabMap
from ..pruning.masks import Layout
from ..pruning.slicing import build_model
from ..pruning.sources import read_layout

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..models.onnx.runtime import OnnxEncoder

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
    tokenizer: PreTrainedTokenizerBase
    pooling: Pooling
    heads: m3.M3Heads | None
    weight_files: list[Path]
    layout: Layout | None = None  # what was kept of the base (bgeprune models only)
    device: str = "cpu"
    artifact: Artifact | None = None  # the bgeprune artifact it was read from (exports, pruned models)
    vocab_map: VocabMap | None = None  # a trimmed vocabulary: its ids -> the base's
    prompts: Prompts = Prompts()  # what the model expects before queries and passages
    backend: str = "torch"  # or "onnx", "onnx-int8": then `graph` runs it (backends.py)
    graph: OnnxEncoder | None = None
    graph_source: str | None = None  # where the graph came from (the export's onnx/, or traced at bench time)

    @property
    def label(self) -> str:
        return label_of(self.spec) + ("" if self.backend == "torch" else f" · {self.backend}")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dtype_name(self) -> str:
        """What the weights compute in: torch's dtype, fp32 ONNX, or ONNX's dynamic int8."""
        return {"onnx": "float32", "onnx-int8": "int8 (dynamic)"}.get(self.backend,
                                                                       str(self.dtype).removeprefix("torch."))

    @property
    def attn_implementation(self) -> str:
        if self.graph is not None:
            return "onnxruntime"
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

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

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

    def encode(self, texts: list[str], max_length: int, batch_size: int, with_heads: bool,
               progress=None) -> M3Output:
        """Dense embeddings (and with bge-m3 heads lexical weights and ColBERT vectors) in input order,
        longest texts first in the batches (less padding), as sentence-transformers does."""
        return encode(self.model, self.tokenizer, self.pooling, texts, heads=self.heads if with_heads else None,
                      max_length=max_length, batch_size=batch_size, device=self.device, longest_first=True,
                      progress=progress, graph=self.graph)


def _artifact_at(path: Path) -> Artifact | None:
    """The bgeprune artifact at `path` (itself, or RUN/pruned), read and checked once; None for a plain
    model directory."""
    for candidate in (path, path / "pruned"):
        if (candidate / MANIFEST).is_file():
            return read_artifact(candidate)
    return None


def _load_pruned(artifact: Artifact, spec: str, dtype, attn: str | None) -> BenchModel:
    ctx = RecipeBase.of(artifact)
    layout = read_layout(artifact.input("masks"))
    state = load_file(str(artifact.file(WEIGHTS)))
    model = build_model(artifact.read_json(CONFIG), {k: v.float() for k, v in state.items()}, ctx.adapter,
                        layout.head_dim, attn).to(dtype)
    heads, files = None, [artifact.path / WEIGHTS]
    if artifact.has_file(m3.HEADS_FILE):
        heads = m3.M3Heads.from_tensors(load_file(str(artifact.file(m3.HEADS_FILE))))
        files.append(artifact.path / m3.HEADS_FILE)
    vocab_map = None
    if layout.vocab is None:
        tokenizer = load_tokenizer(ctx.base_dir)
    else:  # the tokenizer its export will have, made from the same kept-id list
        vocab_map = VocabMap(layout.vocab, ctx.base_config.get("vocab_size", layout.vocab[-1] + 1))
        with trimmed_tokenizer_dir(ctx.base_dir, ctx.base_config, layout.vocab) as directory:
            tokenizer = load_tokenizer(directory)
    return BenchModel(spec, "pruned-model", artifact.path, model, tokenizer, ctx.pooling, heads, files, layout,
                      artifact=artifact, vocab_map=vocab_map, prompts=ctx.prompts)


def _load_directory(directory: Path, spec: str, dtype, attn: str | None, artifact: Artifact | None) -> BenchModel:
    if not (directory / CONFIG).is_file():
        raise ArtifactError(f"{directory} is not a model: it has no config.json; {WHAT_IS_A_MODEL}.")
    layout = None
    if artifact is not None:  # a bgeprune export: check the weights are the ones it wrote
        for name in WEIGHT_FILES:
            if artifact.has_file(name):
                artifact.file(name)
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
    return BenchModel(spec, "hf-model" if artifact is not None else "model", directory, model,
                      load_tokenizer(directory), read_pooling(directory), heads, files, layout, artifact=artifact,
                      vocab_map=VocabMap.read(directory), prompts=read_prompts(directory))


def load_bench_model(spec: str, dtype: torch.dtype = torch.float32, attn: str | None = None,
                     device: str = "cpu") -> BenchModel:
    path = Path(spec).expanduser()
    artifact = _artifact_at(path) if path.is_dir() else None
    if artifact is not None and artifact.kind == "pruned-model":
        loaded = _load_pruned(artifact, spec, dtype, attn)
    else:
        directory = artifact.path if artifact is not None else resolve_base(spec)  # dir, hub id or builtin
        if artifact is not None and artifact.kind != "hf-model":
            raise ArtifactError(f"{directory} is a bgeprune '{artifact.kind}' artifact, not a model; "
                                f"{WHAT_IS_A_MODEL}.")
        loaded = _load_directory(directory, spec, dtype, attn, artifact)
    loaded.model.to(device)
    if loaded.heads is not None:
        loaded.heads = loaded.heads.to(device)
    loaded.device = device
    return loaded
