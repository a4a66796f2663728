"""BERT-family encoders (BertModel; e.g. all-MiniLM-L6-v2): post-LayerNorm layers, HF module names."""

from . import Adapter, register

# Shared by the RoBERTa/XLM-R family, whose modules have the same names and roles.
BERT_LAYER = dict(
    layers="encoder.layer",
    self_attention="attention.self",
    layer_linears={
        "attention.self.query": ("heads", "hidden"),
        "attention.self.key": ("heads", "hidden"),
        "attention.self.value": ("heads", "hidden"),
        "attention.output.dense": ("hidden", "heads"),
        "intermediate.dense": ("ffn", "hidden"),
        "output.dense": ("hidden", "ffn"),
    },
    layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
    head_mask_at="attention.output.dense",
    ffn_mask_at="output.dense",
    embeddings=("embeddings.word_embeddings", "embeddings.position_embeddings",
                "embeddings.token_type_embeddings"),
    norms=("embeddings.LayerNorm",),
    linears={"pooler.dense": ("hidden", "hidden")},
    pooler="pooler",
)

BERT = register(Adapter(model_type="bert", model_class="BertModel", **BERT_LAYER))
