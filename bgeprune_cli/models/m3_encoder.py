"""Use a pruned bge-m3 (or bge-m3 itself) in all three modes without FlagEmbedding.

`M3Encoder` loads the encoder strictly (no missing or random weights) and both head files (safely,
validated), and encodes texts the way `BGEM3FlagModel.encode` does: dense vectors, lexical weights
(token id -> weight) and ColBERT vectors. `compute_score` gives the five scores FlagEmbedding's
`compute_score` returns for query/passage pairs. A model with a trimmed vocabulary keys its lexical
weights by its own token ids; `to_base_ids` maps them to the base's (through `vocab_map.json`), e.g.
to query a sparse index built with bge-m3.

Example:
    from bgeprune_cli.m3_encoder import M3Encoder
    enc = M3Encoder.from_pretrained("out/bge-m3-50pct")
    q, p = enc.encode(["what is pruning?"]), enc.encode(["Pruning removes weights."])
    print(enc.compute_score(q, p))   # {'dense': ..., 'sparse': ..., 'colbert': ..., ...}
    enc.to_base_ids(q.lexical)       # [{bge-m3 token id: weight, ...}]
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ArtifactError
from . import m3
from .encoding import encode
from .loading import load_model, load_tokenizer, max_tokens, read_config
from .m3 import M3Output  # noqa: F401  (the type encode returns; imported from here by users)
from .st_files import read_pooling
from .tokenizers.vocab_map import VocabMap


class M3Encoder:
    def __init__(self, model, tokenizer, heads: m3.M3Heads, pooling, device: str = "cpu",
                 vocab_map: VocabMap | None = None):
        self.model, self.tokenizer, self.heads, self.pooling = model.to(device), tokenizer, heads.to(device), pooling
        self.device = device
        self.max_tokens = max_tokens(model.config.to_dict(), tokenizer)
        self.vocab_map = vocab_map  # a trimmed vocabulary's new id -> base id (None: the base's own ids)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "M3Encoder":
        directory = Path(directory)
        heads = m3.load_heads(directory, read_config(directory)["hidden_size"])
        if heads is None:
            raise ArtifactError(f"{directory} has neither {m3.COLBERT_FILE} nor {m3.SPARSE_FILE}: it is not a "
                                f"bge-m3-style model, so only dense embeddings exist (use SentenceTransformer).")
        return cls(load_model(directory), load_tokenizer(directory), heads, read_pooling(directory), device,
                   VocabMap.read(directory))

    def encode(self, texts: list[str], max_length: int = 512, batch_size: int = 16) -> M3Output:
        """All three outputs of `texts`; `max_length` is capped by what the model takes (`max_tokens`)."""
        return encode(self.model, self.tokenizer, self.pooling, texts, heads=self.heads, max_length=max_length,
                      batch_size=batch_size, device=self.device)

    def to_base_ids(self, lexical):
        """Lexical weights (one `{token id: weight}` dict, a list of them, or an M3Output's) keyed by the
        base model's token ids; unchanged when the vocabulary was not trimmed."""
        lexical = lexical.lexical if isinstance(lexical, M3Output) else lexical
        return lexical if self.vocab_map is None else self.vocab_map.to_base_ids(lexical)

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
