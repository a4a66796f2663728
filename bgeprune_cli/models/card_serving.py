"""The model card's Serving section: the commands for the servers a user runs an export in, and, when the
export has `onnx/`, how to run its graphs.

vLLM and text-embeddings-inference cannot run on the development machine (no GPU, no container
runtime): their lines follow docs/serving.md, which says what each one's source reads. The ONNX snippet
runs as written (tests/test_model_card.py). `export-hf` writes the section; `export-onnx` writes it again
once the export has graphs, so the card names only files that are in the directory.

Example:
    bgeprune export-onnx out/smoke-m3 && grep -A30 '## Serving' out/smoke-m3/README.md
"""

from __future__ import annotations

import json
import shlex

from ..filenames import ONNX_DIR, ONNX_INT8, ONNX_MODEL
from .st_files import Pooling

NAME = "serving"
_M3_OVERRIDE = json.dumps({"architectures": ["BgeM3EmbeddingModel"]})

_VLLM = """### vLLM

```bash
vllm serve {path} --runner pooling
```
"""

_VLLM_M3 = """With `--hf-overrides {override}` vLLM loads bge-m3's own model class, which reads
`sparse_linear.pt` and `colbert_linear.pt` too: `/v1/embeddings` gives the dense vectors and `/pooling`
the sparse weights (`"task": "token_classify"`) and the ColBERT vectors (`"task": "token_embed"`).
`config.json` keeps `XLMRobertaModel`, which every other client expects, so the override stays on the
command line.
"""

_TEI = """### text-embeddings-inference

Dense vectors (its `/embed_sparse` route needs a masked-language-model head{no_head}):

```bash
docker run -p 8080:80 -v "$(realpath {path})":/model \\
  ghcr.io/huggingface/text-embeddings-inference:cpu-1.8 --model-id /model
curl 127.0.0.1:8080/embed -X POST -H 'Content-Type: application/json' -d '{{"inputs": "what is pruning?"}}'
```

On a GPU, the image without `cpu-` and `--gpus all`.{onnx_tei}
"""

_ONNX = '''### ONNX

`{onnx}/` holds {files}. With onnxruntime alone:

```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
session = ort.InferenceSession("{graph}")
batch = tokenizer(["what is pruning?"], padding=True, truncation=True, max_length={length}, return_tensors="np")
states = session.run(["last_hidden_state"], {{i.name: batch[i.name] for i in session.get_inputs()}})[0]
{pool}
print(embedding.shape)  # (1, {dim})
```

sentence-transformers runs it with `SentenceTransformer("{path}", backend="onnx"{st_file})` (with
`pip install optimum-onnx onnxruntime`, which needs transformers 4).{m3_outputs}
'''

_M3_OUTPUTS = """ The graph also has bge-m3's three outputs
from one run: `dense_vecs`, `sparse_vecs` (a weight per token) and `colbert_vecs`."""

_NUMPY_POOL = {
    "cls": "embedding = states[:, 0]",
    "mean": "mask = batch[\"attention_mask\"][..., None]\nembedding = (states * mask).sum(1) / mask.sum(1)",
}


def serving_section(path: str, *, has_heads: bool, pooling: Pooling, dim: int, onnx_files: list[str]) -> list[str]:
    """The section's lines (heading first) for the export at `path` (as the user named it)."""
    quoted = shlex.quote(path)
    lines = ["## Serving\n", _VLLM.format(path=quoted)]
    if has_heads:
        lines.append(_VLLM_M3.format(override=shlex.quote(_M3_OVERRIDE)))
    lines.append(_TEI.format(path=quoted, no_head=", which bge-m3 does not have" if has_heads else "",
                             onnx_tei=" The CPU image runs `onnx/model.onnx` when the directory has it."
                             if ONNX_MODEL in onnx_files else ""))
    if ONNX_MODEL in onnx_files:
        lines.append(_onnx(path, has_heads, pooling, dim, onnx_files))
    return lines


def _onnx(path: str, has_heads: bool, pooling: Pooling, dim: int, onnx_files: list[str]) -> str:
    int8 = ONNX_INT8 in onnx_files
    files = f"`{ONNX_MODEL}` (fp32)" + (f" and `{ONNX_INT8}` (int8 weights, for CPUs)" if int8 else "")
    pool = _NUMPY_POOL[pooling.mode] + ("\nembedding = embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)"
                                        if pooling.normalize else "")
    return _ONNX.format(
        onnx=ONNX_DIR, files=files, path=path, graph=f"{path}/{ONNX_DIR}/{ONNX_INT8 if int8 else ONNX_MODEL}",
        length=pooling.max_seq_length, pool=pool, dim=dim,
        st_file=f', model_kwargs={{"file_name": "{ONNX_DIR}/{ONNX_INT8}"}}' if int8 else "",
        m3_outputs=_M3_OUTPUTS if has_heads else "")
