"""One encode loop for every caller: `M3Encoder` (the public API), bench's quality runs, verify's agreement.

Texts are tokenized in batches, truncated to the smaller of the caller's `max_length` and what the
model takes (its position embeddings; the tokenizer's own limit), and encoded into an `M3Output`:
dense vectors always, lexical weights and ColBERT vectors when bge-m3 heads are given. With
`longest_first` batches hold texts of similar length (less padding, as sentence-transformers and
FlagEmbedding do it); the output is in input order either way. With `graph` (an ONNX graph of the
same export, `onnx.runtime.OnnxEncoder`) the graph runs each batch, heads included, and `model`
only gives the config that caps the length.

Example (what M3Encoder.encode runs):
    python -c "from bgeprune_cli.m3_encoder import M3Encoder as E; \\
        print(E.from_pretrained('out/smoke-m3').encode(['hi']))"
"""

from __future__ import annotations

import torch

from .loading import max_tokens
from .m3 import M3Heads, M3Output, encode_batch, special_token_ids


@torch.inference_mode()
def encode(model, tokenizer, pooling, texts: list[str], *, heads: M3Heads | None = None, max_length: int = 512,
           batch_size: int = 16, device: str | torch.device = "cpu", longest_first: bool = False,
           progress=None, graph=None) -> M3Output:
    """Dense embeddings of `texts` (and with `heads` lexical weights and ColBERT vectors), in input order."""
    max_length = min(max_length, max_tokens(model.config.to_dict(), tokenizer))
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if longest_first else list(range(len(texts)))
    special = special_token_ids(tokenizer) if heads is not None else set()
    parts = []
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        if graph is not None:
            parts.append(graph.m3_batch(batch, pooling, special, with_heads=heads is not None))
        elif heads is not None:
            out = encode_batch(model, heads, batch, pooling, special)
            parts.append(M3Output(out.dense.cpu(), out.lexical, [v.cpu() for v in out.colbert]))
        else:
            states = model(**batch).last_hidden_state.float()
            parts.append(M3Output(pooling.pool(states, batch["attention_mask"]).cpu(), [{} for _ in chunk], []))
        if progress is not None:
            progress.advance()
    if not parts:
        width = heads.hidden if heads is not None else int(model.get_input_embeddings().embedding_dim)
        return M3Output(torch.zeros(0, width), [], [])
    joined = M3Output.concat(parts)
    inverse = sorted(range(len(order)), key=lambda k: order[k])
    return M3Output(joined.dense[inverse], [joined.lexical[k] for k in inverse],
                    [joined.colbert[k] for k in inverse] if joined.colbert else [])
