"""The public import path of `M3Encoder`, bge-m3's three modes without FlagEmbedding (it lives in
`models/m3_encoder.py`, with the model code it uses).

Example:
    from bgeprune_cli.m3_encoder import M3Encoder
"""

from .models.m3_encoder import M3Encoder, M3Output  # noqa: F401  (re-exported: the documented import path)
