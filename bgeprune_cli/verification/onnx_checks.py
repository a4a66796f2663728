"""verify's ONNX checks: the graphs in an export's `onnx/` proved against the PyTorch export.

  onnx-files    every file the manifest's ONNX record names is in onnx/ (a missing one is named); an
                onnx/ that the manifest does not list fails (an interrupted export-onnx, or copied in)
  onnx-parity   the fp32 graph reproduces the PyTorch export, loaded in verify's fresh process, on the
                probe batches (padded, several lengths, batch 1 and 8, none the length traced) within
                1e-4 on every output: hidden states, pooled embedding, and for bge-m3 dense_vecs,
                sparse_vecs and colbert_vecs
  onnx-int8     the int8 graph's agreement with the fp32 graph per mode (Spearman of the pairwise
                similarities, top-10 neighbour overlap, dense cosine); fails under --int8-min-spearman

Hashes are the manifest check's job (a tampered ONNX file fails there); a graph onnxruntime cannot
load fails here, named.

Example:
    bgeprune verify out/smoke-m3 --int8-min-spearman 0.9
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts import Artifact
from ..errors import BadModelFiles
from ..filenames import ONNX_DIR
from ..models.agreement import encodings_agreement
from ..models.m3 import M3Output, special_token_ids
from ..models.onnx.export import require_onnx
from ..models.onnx.runtime import OnnxEncoder, probe_outputs
from ..models.probe import max_abs_diff, probe_batches
from .static_checks import Check

ONNX_ATOL = 1e-4
# The default floor (docs/results.md, ONNX): the lowest per-mode Spearman of int8 vs fp32
# measured on the probe was 0.991 (sparse, bge-m3 50pct shape), with tiny XLM-R/BERT/bge-m3 and the
# MiniLM 50% export above it; 0.9 leaves room for other texts and models and still fails a graph that
# quantization broke (which scores near 0).
INT8_MIN_SPEARMAN = 0.9


def onnx_checks(out: Path, artifact: Artifact | None, torch_outputs: dict, tokenizer, pooling, texts: list[str],
                max_length: int, min_spearman: float) -> list[Check]:
    """The ONNX checks of `out`; `torch_outputs` are the PyTorch export's probe outputs (fresh process)."""
    info = artifact.info.get("onnx") if artifact is not None else None
    if info is None:
        if (out / ONNX_DIR).exists():
            return [Check("onnx-files", "fail", f"{ONNX_DIR}/ is not listed in manifest.json (an interrupted "
                          f"export-onnx, or copied in by hand), so nothing vouches for it; run 'bgeprune export-onnx "
                          f"{out} --force'")]
        return [Check("onnx", "skip", "no onnx/ (bgeprune export-onnx adds it)")]
    require_onnx()  # the export has graphs: verifying them needs onnxruntime (exit 4 with the install line)
    files = {role: out / ONNX_DIR / name for role, name in info["files"].items()}
    missing = [f"{ONNX_DIR}/{p.name}" for p in files.values() if not p.is_file()]
    if missing:
        return [Check("onnx-files", "fail", f"missing {', '.join(missing)}, which the manifest's ONNX record "
                      f"names; a partial onnx/ breaks text-embeddings-inference. Run 'bgeprune export-onnx {out} "
                      f"--force'.", {"missing": missing})]
    checks = [Check("onnx-files", "pass", f"{', '.join(f'{ONNX_DIR}/{p.name}' for p in files.values())} present "
                    f"(opset {info['opset']}; outputs {', '.join(info['outputs'])})")]
    fp32 = _session(files["fp32"])
    if isinstance(fp32, Check):
        return checks + [fp32]
    checks.append(_parity(fp32, torch_outputs, probe_batches(tokenizer, texts, max_length), pooling))
    if "int8" in files:
        int8 = _session(files["int8"])
        if not isinstance(int8, Check) and not _quantized_nodes(files["int8"]):
            int8 = Check("onnx-int8", "fail", f"{files['int8'].name} holds no quantized operator, so it is not an int8 "
                         f"graph (the fp32 graph copied over it?); run 'bgeprune export-onnx {out} --force'")
        checks.append(int8 if isinstance(int8, Check) else
                      _int8(fp32, int8, tokenizer, pooling, texts, max_length, min_spearman))
    return checks


QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DequantizeLinear", "QuantizeLinear",
                 "ConvInteger", "QLinearConv", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def _quantized_nodes(path: Path) -> int:
    """How many of the graph's nodes are quantized operators (the weights are not read)."""
    onnx, _ = require_onnx()
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type in QUANTIZED_OPS for node in graph.node)


def _session(path: Path) -> OnnxEncoder | Check:
    try:
        return OnnxEncoder(path)
    except BadModelFiles as exc:
        return Check("onnx-parity" if "qint8" not in path.name else "onnx-int8", "fail", str(exc))


def _parity(graph: OnnxEncoder, torch_outputs: dict, batches: list[dict], pooling) -> Check:
    if not torch_outputs:
        return Check("onnx-parity", "fail", "no PyTorch outputs to compare with (the export did not load; see "
                     "strict-load)")
    got = probe_outputs(graph, batches, pooling)
    reference = dict(torch_outputs)
    if "sparse_weights" in reference and pooling.mode == "cls" and pooling.normalize:
        reference["dense_vecs"] = reference["embedding"]  # bge-m3's dense is normalised CLS, as the pooling
    diffs = max_abs_diff(reference, got)
    absent = sorted(set(got) - set(diffs)) + sorted(k for k in ("sparse_weights", "colbert") if k in reference
                                                     and k not in got)
    if absent:
        return Check("onnx-parity", "fail", f"{graph.path.name} and the PyTorch export disagree on which outputs "
                     f"exist: {', '.join(absent)}", {"max_abs_diff": diffs, "absent": absent})
    worst = max(diffs.values())
    ok = worst <= ONNX_ATOL
    return Check("onnx-parity", "pass" if ok else "fail",
                 f"{graph.path.name}: max |onnx - pytorch| = {worst:.2e} ({'<=' if ok else '>'} {ONNX_ATOL:g}) over "
                 f"{', '.join(sorted(diffs))} on {len(batches)} probe batches", {"max_abs_diff": diffs})


def _int8(fp32: OnnxEncoder, int8: OnnxEncoder, tokenizer, pooling, texts: list[str], max_length: int,
          min_spearman: float) -> Check:
    special = special_token_ids(tokenizer)
    with_heads = fp32.has_m3_outputs and int8.has_m3_outputs
    batches = probe_batches(tokenizer, texts, max_length, single_first=False)
    with torch.inference_mode():
        ref, got = (M3Output.concat([g.m3_batch(b, pooling, special, with_heads) for b in batches])
                    for g in (fp32, int8))
    numbers = encodings_agreement(ref, got, with_heads)
    low = {mode: v["spearman_pairwise"] for mode, v in numbers.items() if v["spearman_pairwise"] < min_spearman}
    shown = "; ".join(f"{mode}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float))
                      for mode, values in numbers.items())
    status = "fail" if low else "pass"
    why = (f"Spearman under --int8-min-spearman {min_spearman:g} in {', '.join(low)}" if low else
           f"every mode's Spearman >= {min_spearman:g}")
    return Check("onnx-int8", status, f"{int8.path.name} vs {fp32.path.name} on {len(texts)} texts: {shown} ({why})",
                 {"agreement": numbers, "min_spearman": min_spearman, "texts": len(texts)})
