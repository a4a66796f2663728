"""Run an export's ONNX graphs in onnxruntime: sessions, named outputs, the three bge-m3 modes.

`OnnxEncoder` wraps one graph (`onnx/model.onnx` or its int8 twin) in a CPU session with as many
threads as torch uses, so a backend comparison measures the runtime and not the thread count. Its
outputs come back as torch tensors under the graph's names (`export.py` lists them); `m3_batch`
turns them into the same `M3Output` the PyTorch encode loop makes, so bench, verify and users score
ONNX and PyTorch outputs with one piece of code.

Example:
    python -c "from bgeprune_cli.models.onnx.runtime import OnnxEncoder as E; \\
        print(E('out/smoke-m3/onnx/model.onnx').outputs)"
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import BadModelFiles
from ..m3 import M3Output, colbert_per_text, lexical_weights
from .export import HIDDEN_OUTPUT, M3_OUTPUTS, require_onnx


class OnnxEncoder:
    """One ONNX graph in an onnxruntime CPU session."""

    def __init__(self, path: str | Path, threads: int | None = None):
        _, ort = require_onnx()
        self.path = Path(path)
        options = ort.SessionOptions()
        self.threads = threads or torch.get_num_threads()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: spinning threads would steal the CPU from whatever runs next
        # (bench interleaves backends pass by pass), at the cost of a little wake-up latency here.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
        if not self.path.is_file():
            raise BadModelFiles(f"{self.path} is missing; export the ONNX graphs again with "
                                f"'bgeprune export-onnx {self.path.parent.parent} --force'.")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for truncated, corrupt or foreign files
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), exc.__class__.__name__)
            raise BadModelFiles(f"{self.path} is not a loadable ONNX graph (truncated or corrupt?): {first[:300]}. "
                                f"Export it again with 'bgeprune export-onnx {self.path.parent.parent} "
                                f"--force'.") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        if HIDDEN_OUTPUT not in self.outputs or "input_ids" not in self.inputs:
            raise BadModelFiles(f"{self.path} has inputs {self.inputs} and outputs {self.outputs}; an encoder graph "
                                f"takes input_ids and gives {HIDDEN_OUTPUT}.")

    @property
    def has_m3_outputs(self) -> bool:
        return all(name in self.outputs for name in M3_OUTPUTS)

    def run(self, batch: dict, outputs: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The graph's outputs (all, or the named ones) for a tokenised batch of torch or numpy arrays."""
        feeds = {}
        for name in self.inputs:
            value = batch.get(name)
            if value is None and name == "token_type_ids":  # as the tokenizer would: one segment
                value = torch.zeros_like(torch.as_tensor(batch["input_ids"]))
            feeds[name] = value.cpu().numpy() if isinstance(value, torch.Tensor) else value
        names = outputs or self.outputs
        return {name: torch.from_numpy(v) for name, v in zip(names, self.session.run(names, feeds))}

    def m3_batch(self, batch: dict, pooling, special: set[int], with_heads: bool) -> M3Output:
        """Dense vectors by the export's pooling, and with `with_heads` the graph's sparse and ColBERT outputs."""
        mask = torch.as_tensor(batch["attention_mask"])
        if not with_heads:
            states = self.run(batch, [HIDDEN_OUTPUT])[HIDDEN_OUTPUT]
            return M3Output(pooling.pool(states, mask), [{} for _ in range(len(mask))], [])
        out = self.run(batch, list(M3_OUTPUTS))
        return M3Output(out["dense_vecs"], lexical_weights(out["sparse_vecs"], torch.as_tensor(batch["input_ids"]),
                                                          mask, special),
                        colbert_per_text(out["colbert_vecs"], mask))


def probe_outputs(encoder: OnnxEncoder, batches: list[dict], pooling) -> dict[str, torch.Tensor]:
    """The outputs `probe.model_outputs` gives for a PyTorch model (same keys, same token selection), from a graph.

    last_hidden: real tokens only; embedding: the export's pooling of it; for bge-m3 graphs also
    dense_vecs, sparse_weights (real tokens) and colbert (real tokens after CLS).
    """
    tokens, embeddings, dense, sparse, colbert = [], [], [], [], []
    for batch in batches:
        out = encoder.run(batch)
        mask = torch.as_tensor(batch["attention_mask"]).bool()
        states = out[HIDDEN_OUTPUT]
        tokens.append(states[mask])
        embeddings.append(pooling.pool(states, mask.long()))
        if encoder.has_m3_outputs:
            dense.append(out["dense_vecs"])
            sparse.append(out["sparse_vecs"][mask])
            colbert.append(out["colbert_vecs"][mask[:, 1:]])
    result = {"last_hidden": torch.cat(tokens), "embedding": torch.cat(embeddings)}
    if dense:
        result.update(dense_vecs=torch.cat(dense), sparse_weights=torch.cat(sparse), colbert=torch.cat(colbert))
    return result
