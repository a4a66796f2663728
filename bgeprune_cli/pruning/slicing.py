"""Physical pruning: slice HF-named tensors by kept indices, and rebuild an HF model around them.

Tensor names never change; layer numbers are renumbered densely because dropped layers are gone.
Every tensor of the source must be covered by the adapter's table (an unknown tensor is an error,
not a silent copy), and the rebuilt model loads the sliced state dict with `strict=True`.

Example:
    bgeprune prune runs/smoke/masks
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..models.families import Adapter
from ..models.tokenizers.files import SPECIAL_ID_KEYS
from .masks import Layout

PARAMS = ("weight", "bias")


def _rows(layout: Layout, mask: str | None, j: int) -> torch.Tensor | None:
    """Original indices kept along an axis governed by `mask` in kept layer j (None = whole axis)."""
    if mask is None:
        return None
    if mask == "hidden":
        return torch.tensor(layout.hidden)
    if mask == "ffn":
        return torch.tensor(layout.ffn[j])
    heads = torch.tensor(layout.heads[j])
    return (heads[:, None] * layout.head_dim + torch.arange(layout.head_dim)).flatten()


def _slice_linear(state: dict, src: str, dst: str, out_idx, in_idx, out: dict, used: set) -> None:
    for param in PARAMS:
        key = f"{src}.{param}"
        if key not in state:
            continue
        tensor = state[key]
        if out_idx is not None:
            tensor = tensor.index_select(0, out_idx)
        if param == "weight" and in_idx is not None:
            tensor = tensor.index_select(1, in_idx)
        out[f"{dst}.{param}"] = tensor.contiguous()
        used.add(key)


def _slice_vector(state: dict, src: str, dst: str, idx, out: dict, used: set, axis: int = 0) -> None:
    for param in PARAMS:
        key = f"{src}.{param}"
        if key in state:
            out[f"{dst}.{param}"] = state[key].index_select(axis, idx).contiguous()
            used.add(key)


def slice_state_dict(state: dict[str, torch.Tensor], adapter: Adapter, layout: Layout) -> dict[str, torch.Tensor]:
    """The pruned model's tensors, under the same HF names (layers renumbered)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    hidden = torch.tensor(layout.hidden)
    for j, i in enumerate(layout.layers):
        src, dst = f"{adapter.layers}.{i}", f"{adapter.layers}.{j}"
        for module, (out_mask, in_mask) in adapter.layer_linears.items():
            _slice_linear(state, f"{src}.{module}", f"{dst}.{module}", _rows(layout, out_mask, j),
                          _rows(layout, in_mask, j), out, used)
        for norm in adapter.layer_norms:
            _slice_vector(state, f"{src}.{norm}", f"{dst}.{norm}", hidden, out, used)
    for name in adapter.embeddings:
        _slice_vector(state, name, name, hidden, out, used, axis=1)
    if layout.vocab is not None:  # rows of the kept token ids, in their order (docs/design.md, Masks)
        key = f"{adapter.word_embeddings}.weight"
        out[key] = out[key].index_select(0, torch.tensor(layout.vocab)).contiguous()
    for name in adapter.norms:
        _slice_vector(state, name, name, hidden, out, used)
    for name, (out_mask, in_mask) in adapter.linears.items():
        _slice_linear(state, name, name, _rows(layout, out_mask, 0), _rows(layout, in_mask, 0), out, used)

    dropped = tuple(f"{adapter.layers}.{i}." for i in range(layout.base["layers"]) if i not in layout.layers)
    unknown = sorted(k for k in state if k not in used and not k.startswith(dropped))
    if unknown:
        raise ValueError(f"no slicing rule for {len(unknown)} tensors (e.g. {unknown[:3]}); this model variant "
                         f"is not supported by the '{adapter.model_type}' adapter")
    return out


def pad_to_stock(state: dict[str, torch.Tensor], adapter: Adapter, layout: Layout) -> tuple[dict, dict]:
    """Zero-pad a non-uniform pruned model to one stock shape; exact, since padded units contribute 0.

    Heads are padded to hidden/head_dim per layer (so head size stays head_dim), FFN to the largest
    kept count. A zero head has zero q, k, v (so a zero context) and zero output columns; a zero FFN
    unit has zero input row and bias and zero output column. Returns (state, sizes).
    """
    hidden = len(layout.hidden)
    if hidden % layout.head_dim:
        raise ValueError(f"{hidden} kept hidden dims is not a multiple of the head size {layout.head_dim}")
    heads = hidden // layout.head_dim
    ffn = max(map(len, layout.ffn))
    if max(map(len, layout.heads)) > heads:
        raise ValueError(f"a layer keeps {max(map(len, layout.heads))} heads but {hidden} hidden dims allow "
                         f"only {heads} of size {layout.head_dim}")
    width = {"heads": heads * layout.head_dim, "ffn": ffn, "hidden": hidden}
    out = dict(state)
    for j in range(len(layout.layers)):
        for module, axes in adapter.layer_linears.items():
            for param in PARAMS:
                key = f"{adapter.layers}.{j}.{module}.{param}"
                if key not in out:
                    continue
                tensor = out[key]
                for axis, mask in enumerate(axes if param == "weight" else axes[:1]):
                    if mask and tensor.shape[axis] < width[mask]:
                        pad = list(tensor.shape)
                        pad[axis] = width[mask] - tensor.shape[axis]
                        tensor = torch.cat([tensor, tensor.new_zeros(pad)], dim=axis)
                out[key] = tensor
    return out, {"layers": len(layout.layers), "heads": heads, "ffn": ffn, "hidden": hidden}


def stock_config(base_config: dict, adapter: Adapter, sizes: dict, vocab: list[int] | None = None) -> dict:
    """The base's config.json with the real sizes; every other field kept, no auto_map. With a trimmed
    `vocab` (kept ids) also its vocab_size and the special token ids renumbered (they are always kept)."""
    config = {k: v for k, v in base_config.items() if k not in ("auto_map", "_name_or_path", "pruned_heads")}
    config.update(architectures=[adapter.model_class], model_type=adapter.model_type,
                  num_hidden_layers=sizes["layers"], hidden_size=sizes["hidden"],
                  num_attention_heads=sizes["heads"], intermediate_size=sizes["ffn"])
    if vocab is not None:
        new = {old: i for i, old in enumerate(vocab)}
        config["vocab_size"] = len(vocab)
        config.update({k: new[v] for k, v in base_config.items() if k in SPECIAL_ID_KEYS and isinstance(v, int)
                       and v in new})
    return config


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def build_model(config: dict, state: dict[str, torch.Tensor], adapter: Adapter, head_dim: int,
                attn_implementation: str | None = None) -> nn.Module:
    """An HF model holding `state`; layers may differ in heads/FFN (modules resized to the tensors).

    Used to run pruned models, including non-uniform ones no stock config can describe.
    """
    from transformers import AutoConfig, AutoModel

    build = dict(config)
    if build["hidden_size"] % build["num_attention_heads"]:
        build["num_attention_heads"] = 1  # construction only; head sizes are set per layer below
    hf_config = AutoConfig.for_model(**build)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with _no_init():
        model = AutoModel.from_config(hf_config, **kwargs)
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or tuple(weight.shape) == tuple(module.weight.shape):
            continue
        if isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        elif isinstance(module, nn.LayerNorm):
            new = nn.LayerNorm(weight.shape[0], eps=module.eps)
        elif isinstance(module, nn.Embedding):
            new = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=module.padding_idx)
        else:
            raise ValueError(f"cannot resize {name} ({type(module).__name__}) to {tuple(weight.shape)}")
        _replace(model, name, new)
    for layer in model.get_submodule(adapter.layers):
        attention = layer.get_submodule(adapter.self_attention)
        width = attention.query.out_features
        attention.num_attention_heads = width // head_dim
        attention.attention_head_size = head_dim
        attention.all_head_size = width
        attention.scaling = head_dim ** -0.5
    model.load_state_dict(state, strict=True)
    return model.eval()


@contextlib.contextmanager
def _no_init():
    """Skip random init of weights that are overwritten right after (saves seconds at bge-m3 size)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        yield
        return
    with no_init_weights():
        yield
