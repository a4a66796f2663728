"""Use a pruned bge-m3 (or bge-m3 itself) in all three modes without FlagEmbedding.

`M3Encoder` loads the encoder strictly (no missing or random weights) and both head files (safely,
validated), and encodes texts the way `BGEM3FlagModel.encode` does: dense vectors, lexical weights
(token id -> weight) and ColBERT vectors. `compute_score` gives the five scores FlagEmbedding's
`compute_score` returns for query/passage pairs.

Example:
    from bgeprune_cli.m3_encoder import M3Encoder
    enc = M3Encoder.from_pretrained("out/bge-m3-50pct")
    q, p = enc.encode(["what is pruning?"]), enc.encode(["Pruning removes weights."])
    print(enc.compute_score(q, p))   # {'dense': ..., 'sparse': ..., 'colbert': ..., ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .models import m3
from .models.loading import load_model, load_tokenizer, max_tokens, read_config
from .models.st_files import read_pooling
from .errors import ArtifactError


@dataclass
class M3Output:
    dense: torch.Tensor  # [n, d], normalised
    lexical: list[dict[int, float]]  # per text: token id -> weight
    colbert: list[torch.Tensor]  # per text: [tokens after CLS, D], normalised

    def __len__(self) -> int:
        return len(self.lexical)

    @classmethod
    def concat(cls, parts: list["M3Output"]) -> "M3Output":
        """One output from the outputs of consecutive batches."""
        return cls(torch.cat([p.dense for p in parts]), [w for p in parts for w in p.lexical],
                   [v for p in parts for v in p.colbert])


def encode_batch(model, heads: m3.M3Heads, batch: dict, pooling, special: set[int],
                 hidden_z: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> M3Output:
    """All three outputs of one tokenised batch. `keep` restricts states to kept hidden dims (masked
    models: the heads must then be the sliced ones); `hidden_z` is for masks applied by hooks."""
    states = model(**batch).last_hidden_state.float()
    if keep is not None:
        states = states.index_select(-1, keep)
    dense = pooling.pool(states, batch["attention_mask"])
    weights = heads.token_weights(states)
    vectors = heads.colbert_vectors(states, batch["attention_mask"], hidden_z)
    return M3Output(dense, m3.lexical_weights(weights, batch["input_ids"], batch["attention_mask"], special),
                    m3.colbert_per_text(vectors, batch["attention_mask"]))


class M3Encoder:
    def __init__(self, model, tokenizer, heads: m3.M3Heads, pooling, device: str = "cpu"):
        self.model, self.tokenizer, self.heads, self.pooling = model.to(device), tokenizer, heads.to(device), pooling
        self.device = device
        self.special = m3.special_token_ids(tokenizer)
        self.max_tokens = max_tokens(model.config.to_dict(), tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "M3Encoder":
        directory = Path(directory)
        heads = m3.load_heads(directory, read_config(directory)["hidden_size"])
        if heads is None:
            raise ArtifactError(f"{directory} has neither {m3.COLBERT_FILE} nor {m3.SPARSE_FILE}: it is not a "
                                f"bge-m3-style model, so only dense embeddings exist (use SentenceTransformer).")
        return cls(load_model(directory), load_tokenizer(directory), heads, read_pooling(directory), device)

    @torch.no_grad()
    def encode(self, texts: list[str], max_length: int = 512, batch_size: int = 16) -> M3Output:
        """`max_length` is capped by what the model takes (`max_tokens`), as FlagEmbedding caps it."""
        max_length = min(max_length, self.max_tokens)
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = encode_batch(self.model, self.heads, batch, self.pooling, self.special)
            parts.append(M3Output(out.dense.cpu(), out.lexical, [v.cpu() for v in out.colbert]))
        if not parts:
            return M3Output(torch.zeros(0, self.heads.hidden), [], [])
        return M3Output.concat(parts)

    @staticmethod
    def compute_score(queries: M3Output, passages: M3Output,
                      weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, torch.Tensor]:
        """Score matrices [queries, passages] per mode, and FlagEmbedding's weighted combinations."""
        dense = m3.dense_scores(queries.dense, passages.dense)
        sparse = m3.sparse_scores(queries.lexical, passages.lexical)
        colbert = m3.colbert_scores(queries.colbert, passages.colbert)
        w_dense, w_sparse, _ = weights
        return {"dense": dense, "sparse": sparse, "colbert": colbert,
                "sparse+dense": (sparse * w_sparse + dense * w_dense) / (w_sparse + w_dense),
                "colbert+sparse+dense": m3.combined_scores(dense, sparse, colbert, weights)}
