"""Model-family adapters as data: where each mask acts and which axis of which tensor it slices.

An adapter names HF modules by HF's own paths; nothing is renamed. Look one up by the
config's `model_type` with `adapter_for`. Add a family by adding a table, not an if/elif.

Example:
    python -c "from bgeprune_cli.models.families import adapter_for; print(adapter_for('xlm-roberta'))"
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError


@dataclass(frozen=True)
class Adapter:
    model_type: str
    model_class: str  # the stock class an export declares in config.json "architectures"
    layers: str  # the ModuleList of encoder layers
    self_attention: str  # per layer: the module holding the q/k/v projections and head-size attributes
    # per layer: Linear module -> (mask on its output rows, mask on its input columns); None = unmasked axis
    layer_linears: dict[str, tuple[str | None, str | None]]
    layer_norms: tuple[str, ...]  # per layer: LayerNorms over the residual stream (hidden axis)
    head_mask_at: str  # per layer: the Linear whose *input* is the per-head context
    ffn_mask_at: str  # per layer: the Linear whose *input* is the FFN activation
    embeddings: tuple[str, ...]  # Embedding modules whose dim is the hidden axis
    norms: tuple[str, ...]  # LayerNorms outside the layers (hidden axis)
    linears: dict[str, tuple[str | None, str | None]]  # Linear modules outside the layers
    pooler: str | None  # module whose output is the pooled vector (masked on the hidden axis)
    word_embeddings: str = "embeddings.word_embeddings"  # one row per token id: vocabulary trimming slices rows
    # RoBERTa-style position ids start after the padding id, so pad_token_id + 1 positions are never tokens.
    positions_after_padding: bool = False

    def max_tokens(self, config: dict) -> int:
        """The longest input (special tokens included) the position embeddings can take."""
        offset = config.get("pad_token_id", 1) + 1 if self.positions_after_padding else 0
        return config["max_position_embeddings"] - offset


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    _REGISTRY[adapter.model_type] = adapter
    return adapter


def adapter_for(model_type: str) -> Adapter:
    from . import bert, xlm_roberta  # noqa: F401  (tables register themselves)

    if model_type not in _REGISTRY:
        raise UsageError(f"model_type '{model_type}' is not supported; bgeprune knows: "
                         + ", ".join(sorted(_REGISTRY)))
    return _REGISTRY[model_type]
