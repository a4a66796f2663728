"""ONNX graphs of an exported model directory, fp32 and dynamic int8 (docs/design.md, ONNX).

ONNX is another view of an export: the graph is traced from the export's own files, loaded strictly
(`loading.load_model`, bge-m3 heads through `m3.load_heads`), never from a masked model, so what
`verify` proved about the export carries over once the graph is shown to reproduce it.

    onnx/model.onnx          inputs  input_ids, attention_mask (+ token_type_ids when the tokenizer makes them)
                             outputs last_hidden_state [B, L, H]
                                     bge-m3 style (head files present), from the same run:
                                     dense_vecs [B, H]        normalize(CLS)
                                     sparse_vecs [B, L]       relu(sparse_linear(h)) per token
                                     colbert_vecs [B, L-1, H] normalize(colbert_linear(h[:, 1:]) * mask)
    onnx/model.onnx_data     its weights (external data: needed past protobuf's 2 GB limit, and what lets
                             the export write bge-m3's 1 GB embedding table without copying it)
    onnx/model_qint8_avx512_vnni.onnx   the same graph, MatMul/Gather weights int8 (dynamic quantization)

Names are the ones the clients read: text-embeddings-inference loads `onnx/model.onnx` (fetching
`onnx/model.onnx_data`) and reads `last_hidden_state`; sentence-transformers' ONNX backend loads
`onnx/model.onnx` through Optimum and names int8 files `model_qint8_<arch>.onnx`. No pooled output:
TEI would take a `sentence_embedding` output over its own (configurable) pooling.

Example:
    bgeprune export-onnx out/smoke-m3        # or: bgeprune export-hf runs/smoke-m3 out/smoke-m3 --onnx
"""

from __future__ import annotations

import gc
import logging
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import EnvironmentProblem
from ...filenames import ONNX_DATA, ONNX_INT8, ONNX_MODEL
from .. import m3
from ..loading import load_model, load_tokenizer, read_config

INSTALL = "pip install -e '.[onnx]' (in the bgeprune checkout)"
OPSET = 17  # LayerNormalization is one op from 17 on; every onnxruntime since 1.14 runs it
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
HIDDEN_OUTPUT = "last_hidden_state"
M3_OUTPUTS = ("dense_vecs", "sparse_vecs", "colbert_vecs")  # FlagEmbedding's names for the three modes
EXTERNAL_MIN_BYTES = 1024  # initializers this large go to model.onnx_data; small constants stay in the graph
# Dynamic int8: uint8 activations quantized per batch at run time, int8 weights per output channel
# (per-channel costs nothing at run time: docs/results.md, ONNX), in 7 bits (reduce_range). A graph is
# run on CPUs its exporter never sees, and without VNNI (AVX2 alone: many AMD EPYC and older Intel
# machines) onnxruntime's uint8 x int8 products saturate at full range: on such a CPU the tiny bge-m3
# test model's last hidden state moved by 0.96 against fp32 at full range, within 0.5 in 7 bits (test_onnx).
INT8 = {"weights": "QInt8", "activations": "QUInt8", "per_channel": True, "reduce_range": True}
STAND_IN_ROWS = 8  # rows of the word-embedding table while tracing (export_onnx)
# Two texts of different lengths, so the trace sees padding; verify probes other lengths and batch sizes.
TRACE_TEXTS = ("ONNX export", "A second, longer text, so that the traced batch holds padding.")


def require_onnx():
    """(onnx, onnxruntime), or exit 4 with the install command."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise EnvironmentProblem(f"ONNX export and the ONNX backends need the optional packages onnx and "
                                 f"onnxruntime ({exc.name} is not installed); install them with: {INSTALL}") from None
    return onnx, onnxruntime


class OnnxView(nn.Module):
    """The exported encoder (and bge-m3 heads) as one traceable function of the token inputs."""

    def __init__(self, model: nn.Module, heads: m3.M3Heads | None, inputs: list[str]):
        super().__init__()
        self.model, self.heads, self.inputs = model, heads, inputs

    def forward(self, *args: torch.Tensor):
        batch = dict(zip(self.inputs, args))
        states = self.model(**batch).last_hidden_state
        if self.heads is None:
            return states
        return (states, F.normalize(states[:, 0], dim=-1), self.heads.token_weights(states),
                self.heads.colbert_vectors(states, batch["attention_mask"]))


def graph_inputs(tokenizer) -> list[str]:
    return [name for name in INPUTS if name in tokenizer.model_input_names]


def export_onnx(model_dir: Path, dest: Path, *, int8: bool = True) -> dict:
    """Trace `model_dir` into `dest` (an empty directory): model.onnx (+ model.onnx_data) and the int8 graph.

    Returns what the manifest records: opset, inputs, outputs, files, int8 settings, versions.
    The word-embedding table (most of an encoder's bytes: 250k rows in bge-m3) is traced as a stand-in
    of a few rows, which the graph does not depend on, and put into both graphs afterwards
    (`_save_external`, `_put_quantized_table`), so neither the tracer nor the quantizer ever holds a
    copy of it, and the fp32 weights go to model.onnx_data one tensor at a time: the export step stays
    under 3x the fp32 weights (docs/results.md, ONNX).
    """
    onnx, onnxruntime = require_onnx()
    model_dir, dest = Path(model_dir), Path(dest)
    config = read_config(model_dir)
    # Eager attention: the traced graph is plain MatMul/Softmax with the padding mask applied, the same
    # for every batch (sdpa's mask shortcuts are decided in Python and could be traced as constants).
    model = load_model(model_dir, "eager")
    heads = m3.load_heads(model_dir, config["hidden_size"])
    tokenizer = load_tokenizer(model_dir)
    inputs = graph_inputs(tokenizer)
    example = dict(tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt"))
    outputs = [HIDDEN_OUTPUT] + (list(M3_OUTPUTS) if heads is not None else [])
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs + [HIDDEN_OUTPUT, "sparse_vecs"]}
    axes.update(dense_vecs={0: "batch"}, colbert_vecs={0: "batch", 1: "sequence_after_cls"})
    view = OnnxView(model, heads, inputs).eval()
    embedding = model.get_input_embeddings()
    table_name = next(name for name, p in view.named_parameters() if p is embedding.weight)
    table = embedding.weight.detach()
    embedding.weight = nn.Parameter(table[:STAND_IN_ROWS].clone(), requires_grad=False)
    example["input_ids"] = example["input_ids"] % STAND_IN_ROWS  # any ids: the graph is the same
    with tempfile.TemporaryDirectory(prefix=".trace-", dir=dest) as scratch:
        traced, quantized = Path(scratch) / ONNX_MODEL, Path(scratch) / ONNX_INT8
        with torch.no_grad(), _quiet():
            torch.onnx.export(view, tuple(example[n] for n in inputs), str(traced),
                              dynamo=False, opset_version=OPSET, input_names=inputs, output_names=outputs,
                              dynamic_axes={k: v for k, v in axes.items() if k in inputs + outputs},
                              do_constant_folding=True)
        del view, model, heads, embedding
        gc.collect()
        table = table.float().numpy()  # a view of the loaded weights, not a copy
        files = {"fp32": ONNX_MODEL, "fp32_data": ONNX_DATA}
        if int8:  # quantized while the table is a stand-in, then given the table quantized the same way
            quantize_int8(traced, quantized)
            proto = onnx.load(str(quantized))
            _put_quantized_table(proto, table_name, table)
            onnx.save_model(proto, str(dest / ONNX_INT8))
            files["int8"] = ONNX_INT8
            del proto
            gc.collect()
        _save_external(onnx.load(str(traced)), dest / ONNX_MODEL, table_name, table)
    return {"opset": OPSET, "inputs": inputs, "outputs": outputs, "files": files,
            "int8": dict(INT8) if int8 else None, "traced_with": {"batch": len(TRACE_TEXTS),
                                                                   "length": int(example["input_ids"].shape[1])},
            "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__}}


def _initializer(proto, name: str):
    found = [t for t in proto.graph.initializer if t.name == name]
    if len(found) != 1:
        raise RuntimeError(f"the traced graph has {len(found)} initializers named {name!r}; expected one")
    return found[0]


def _save_external(proto, path: Path, table_name: str, table) -> None:
    """`path` with every sizeable weight in `model.onnx_data` beside it (ONNX's external data: location,
    offset, length), the real word-embedding table written in place of the traced stand-in straight
    from memory, so no copy of the weights is ever made."""
    import onnx
    from onnx import TensorProto

    _initializer(proto, table_name)  # the stand-in is there
    with open(path.parent / ONNX_DATA, "wb") as data:
        for tensor in proto.graph.initializer:
            if tensor.name == table_name:
                del tensor.dims[:]
                tensor.dims.extend(table.shape)
            elif not (tensor.HasField("raw_data") and len(tensor.raw_data) >= EXTERNAL_MIN_BYTES):
                continue
            offset = data.tell()
            if tensor.name == table_name:
                table.tofile(data)
            else:
                data.write(tensor.raw_data)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", ONNX_DATA), ("offset", str(offset)), ("length", str(data.tell() - offset))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


def _put_quantized_table(proto, name: str, table, chunk_rows: int = 16384) -> None:
    """The table quantized as onnxruntime quantizes a Gather's weight (an activation: asymmetric uint8
    over the whole table's range), computed in row chunks so no full-size temporary exists; scale and
    zero point replace the stand-in's. Equal to quantizing the full graph (tests/test_onnx.py)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization.quant_utils import quantize_data

    quantized = _initializer(proto, name + "_quantized")
    if quantized.data_type != TensorProto.UINT8:
        raise RuntimeError(f"onnxruntime quantized {name} to type {quantized.data_type}, not uint8")
    rmin = min(float(table[i:i + chunk_rows].min()) for i in range(0, len(table), chunk_rows))
    rmax = max(float(table[i:i + chunk_rows].max()) for i in range(0, len(table), chunk_rows))
    data = np.empty(table.shape, dtype=np.uint8)
    for start in range(0, len(table), chunk_rows):
        zero_point, scale, rows = quantize_data(table[start:start + chunk_rows].flatten(), TensorProto.UINT8, False,
                                                rmin_override=rmin, rmax_override=rmax)
        data[start:start + chunk_rows] = rows.reshape(-1, table.shape[1])
    del quantized.dims[:]
    quantized.dims.extend(table.shape)
    quantized.raw_data = data.tobytes()
    for suffix, value in (("_scale", scale), ("_zero_point", zero_point)):
        old = _initializer(proto, name + suffix)
        old.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=numpy_helper.to_array(old).dtype).reshape(
            tuple(old.dims)), old.name))


def quantize_int8(source: Path, target: Path, per_channel: bool = INT8["per_channel"]) -> None:
    """Dynamic int8 quantization of every MatMul and Gather weight (outputs unchanged in name and shape)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():  # it logs a pre-processing suggestion on every call
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=INT8["reduce_range"])


class _quiet:
    """Silence the exporters' advice while they run (TracerWarnings about Python branches that are
    constant for an encoder, onnxruntime's pre-processing hint); errors still raise."""

    def __enter__(self):
        import warnings

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)
        self._warnings.__exit__(*exc)
        return False
