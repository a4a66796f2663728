"""Apply masks to an unmodified HF encoder from outside, with forward hooks (docs/design.md, Masks).

The model keeps HF's module and parameter names; `MaskHooks` only changes what flows between
modules. `z` may hold binary keep-masks (verify, parity) or soft gate samples (training): swap
`hooks.z` between steps without re-registering.

    layer   [L]    y = x + z * (layer(x) - x)                  (whole post-LN block)
    heads   [L, H] per-head context entering attention.output.dense
    ffn     [L, F] activation entering output.dense
    hidden  [d]    every residual-stream LayerNorm normalises over the kept dims only, then * z;
                   the pooler output * z

Example:
    with MaskHooks(model, adapter_for("xlm-roberta"), masks, head_dim=64):
        out = model(**batch)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.families import Adapter


def submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


class MaskHooks:
    def __init__(self, model: nn.Module, adapter: Adapter, z: dict[str, torch.Tensor], head_dim: int):
        self.z = z
        self.head_dim = head_dim
        self._handles = []
        layers = submodule(model, adapter.layers)
        for i, layer in enumerate(layers):
            self._handles.append(layer.register_forward_hook(self._layer_hook(i), with_kwargs=True))
            self._handles.append(submodule(layer, adapter.head_mask_at).register_forward_pre_hook(self._heads_hook(i)))
            self._handles.append(submodule(layer, adapter.ffn_mask_at).register_forward_pre_hook(self._ffn_hook(i)))
            for norm in adapter.layer_norms:
                self._handles.append(submodule(layer, norm).register_forward_hook(self._norm_hook))
        for norm in adapter.norms:
            self._handles.append(submodule(model, norm).register_forward_hook(self._norm_hook))
        if adapter.pooler and getattr(model, adapter.pooler, None) is not None:
            self._handles.append(submodule(model, adapter.pooler).register_forward_hook(self._pooler_hook))

    # Each hook reads self.z at call time and is a no-op for a mask type that is absent.
    def _layer_hook(self, i: int):
        def hook(module, args, kwargs, output):
            z = self.z.get("layer")
            if z is None:
                return None
            x = args[0] if args else kwargs["hidden_states"]
            gate = z[i].to(output.dtype)
            return x + gate * (output - x)
        return hook

    def _heads_hook(self, i: int):
        def hook(module, args):
            z = self.z.get("heads")
            if z is None:
                return None
            context = args[0]
            scale = z[i].to(context.dtype).repeat_interleave(self.head_dim)
            return (context * scale,) + tuple(args[1:])
        return hook

    def _ffn_hook(self, i: int):
        def hook(module, args):
            z = self.z.get("ffn")
            if z is None:
                return None
            return (args[0] * z[i].to(args[0].dtype),) + tuple(args[1:])
        return hook

    def _norm_hook(self, module: nn.LayerNorm, args, output):
        z = self.z.get("hidden")
        if z is None:
            return None
        x = args[0]
        kept = torch.nonzero(z, as_tuple=False).flatten()
        normed = F.layer_norm(x.index_select(-1, kept), (kept.numel(),),
                              module.weight.index_select(0, kept), module.bias.index_select(0, kept), module.eps)
        out = x.new_zeros(x.shape).index_copy(-1, kept, normed)
        return out * z.to(out.dtype)

    def _pooler_hook(self, module, args, output):
        z = self.z.get("hidden")
        return None if z is None else output * z.to(output.dtype)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "MaskHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def as_float_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Boolean keep-masks as 0/1 floats for the hooks."""
    return {name: mask.to(torch.float32) for name, mask in masks.items()}
