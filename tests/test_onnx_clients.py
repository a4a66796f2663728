"""The ONNX snippets of docs/onnx.md, run against a tiny bge-m3 export: onnxruntime's three modes (here) and
sentence-transformers' `backend="onnx"` (in the compatibility environment: Optimum's ONNX part needs
transformers < 4.58); and the layout text-embeddings-inference reads (its source, cited in docs/onnx.md)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bgeprune_cli.m3_encoder import M3Encoder
from bgeprune_cli.models.onnx.runtime import OnnxEncoder
from test_compat import COMPAT_PYTHON
from test_onnx import exports  # noqa: F401  (the module fixture: tiny exports with onnx/)

ONNX_DOC = (Path(__file__).resolve().parents[1] / "docs" / "onnx.md").read_text()


def _snippet(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", ONNX_DOC, flags=re.S)
    return next(b for b in blocks if first_line in b)


def test_onnxruntime_snippet_gives_flagembeddings_three_modes(exports):  # noqa: F811
    out = exports["m3"]
    code = _snippet("# onnxruntime: bge-m3's dense, sparse and ColBERT").replace("out/bge-m3-50pct", str(out))
    scope: dict = {}
    exec(compile(code, "docs/onnx.md (onnxruntime snippet)", "exec"), scope)
    expected = M3Encoder.from_pretrained(out).encode(scope["texts"])
    assert np.abs(scope["dense"] - expected.dense.numpy()).max() <= 1e-4
    for got, want in zip(scope["lexical"], expected.lexical):
        assert got.keys() == want.keys() and max(abs(got[k] - want[k]) for k in got) <= 1e-4
    for got, want in zip(scope["colbert_vecs"], expected.colbert):
        assert got.shape == tuple(want.shape) and np.abs(got - want.numpy()).max() <= 1e-4
    scores = M3Encoder.compute_score(M3Encoder.from_pretrained(out).encode(scope["texts"][:1]),
                                     M3Encoder.from_pretrained(out).encode(scope["texts"][1:]))
    for name in ("dense", "sparse", "colbert"):
        assert abs(scope[f"{name}_score"] - float(scores[name][0, 0])) <= 1e-4, name


def test_layout_is_what_text_embeddings_inference_reads(exports):  # noqa: F811
    """backends/ort/src/lib.rs: onnx/model.onnx, inputs it knows how to feed, last_hidden_state and no
    sentence_embedding (which it would prefer over its own pooling); backends/src/lib.rs fetches
    onnx/model.onnx_data; config.json and tokenizer.json as for its other backends."""
    for out in exports.values():
        graph = OnnxEncoder(out / "onnx" / "model.onnx")
        assert set(graph.inputs) <= {"input_ids", "attention_mask", "token_type_ids"}
        assert "last_hidden_state" in graph.outputs and "sentence_embedding" not in graph.outputs
        assert (out / "onnx" / "model.onnx_data").is_file() and (out / "tokenizer.json").is_file()
        assert json.loads((out / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"] == \
            json.loads((out / "config.json").read_text())["hidden_size"]


@pytest.mark.skipif(not COMPAT_PYTHON, reason="needs the compatibility Python (docs/testing.md: Compatibility tests): "
                    "export BGEPRUNE_COMPAT_PYTHON=$(.ci/compat-env)")
def test_sentence_transformers_onnx_backend_snippet(exports, tmp_path):  # noqa: F811
    out = exports["m3"]
    texts = ["what is pruning?", "Pruning removes weights from a network.", "x"]
    code = _snippet("backend=\"onnx\"").replace("out/bge-m3-50pct", str(out))
    script = tmp_path / "st_onnx.py"
    script.write_text(code + "\nimport numpy, sys, sentence_transformers\n"
                      f"texts = {texts!r}\n"
                      "numpy.save(sys.argv[1], numpy.stack([model.encode(texts), int8.encode(texts)]))\n"
                      "print(sentence_transformers.__version__)\n")
    proc = subprocess.run([COMPAT_PYTHON, str(script), str(tmp_path / "st.npy")], capture_output=True, text=True,
                          timeout=600)
    if "No module named 'optimum" in proc.stderr or "requires installing Optimum" in proc.stderr:
        pytest.skip("the compatibility environment predates optimum-onnx; rebuild it with .ci/compat-env")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fp32, int8 = np.load(tmp_path / "st.npy")
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(out), device="cpu").encode(texts)
    assert np.abs(fp32 - expected).max() <= 1e-4
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(int8), torch.from_numpy(expected))
    assert float(cosine.min()) > 0.95, cosine
