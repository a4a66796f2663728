"""Recovery-only training: `bgeprune train RECIPE --masks RUN/masks` skips the L0 search.

The masks come from elsewhere (finalize-masks after `bgeprune magnitude`, or another run) and are
checked before any weights load: the same base model, the mask types the recipe's target names, the
base's shapes, and exactly what finalize-masks would choose for the recipe's target, so the new run's
finalize-masks reproduces them (it checks that again against RECOVERY_MASKS). A fingerprint of the
masks goes into every checkpoint, so --resume recovers with the same masks or refuses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import read_artifact
from ..config import BaseDims, Recipe, targeted_masks
from ..errors import UsageError
from ..pruning.masks import finalize, log_alpha_of
from ..pruning.sources import read_masks

API = "(Python API)"  # the source of masks given as tensors


@dataclass(frozen=True)
class FixedMasks:
    masks: dict[str, torch.Tensor]  # bool, one per mask type the recipe trains
    source: str  # the masks artifact's path, or API
    fingerprint: str  # sha256 over names, shapes and values


def fingerprint(masks: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].to(torch.bool).cpu().contiguous()
        digest.update(f"{name}:{list(mask.shape)};".encode())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


def read_fixed_masks(path: Path, recipe: Recipe, dims: BaseDims, run_dir: Path) -> FixedMasks:
    """A masks artifact, checked against the recipe (see the module docstring)."""
    artifact = read_artifact(path, "masks", needed_by="train --masks")
    if artifact.path.resolve().parent == Path(run_dir).resolve():
        raise UsageError(f"--masks {artifact.path} lies in the run dir this training would write ({run_dir}), "
                         f"next to the train-run it was finalized from; pass --run-dir with a new directory "
                         f"(e.g. {Path(run_dir).name}-recovered) so nothing of that run is replaced.")
    theirs = (artifact.recipe or {}).get("base", {})
    ours = recipe.base.model_dump()
    if (theirs.get("model"), theirs.get("revision")) != (ours["model"], ours["revision"]):
        raise UsageError(f"--masks {artifact.path} was made for base {theirs.get('model')!r} (revision "
                         f"{theirs.get('revision')!r}), but the recipe's base is {ours['model']!r} (revision "
                         f"{ours['revision']!r}); masks only fit the model they were chosen on.")
    masks = read_masks(artifact)
    check(masks, recipe, dims, str(artifact.path))
    return FixedMasks(masks, str(artifact.path), fingerprint(masks))


def from_tensors(masks: dict[str, torch.Tensor], recipe: Recipe, dims: BaseDims) -> FixedMasks:
    masks = {k: v.to(torch.bool).cpu() for k, v in masks.items()}
    check(masks, recipe, dims, API)
    return FixedMasks(masks, API, fingerprint(masks))


def check(masks: dict[str, torch.Tensor], recipe: Recipe, dims: BaseDims, where: str) -> None:
    """The masks fit the base and are exactly what finalize-masks picks for the recipe's target."""
    wanted = targeted_masks(recipe.target, dims)
    if sorted(masks) != sorted(wanted):
        raise UsageError(f"{where} holds masks {sorted(masks)}, but the recipe's [target] prunes {sorted(wanted)}; "
                         f"use the recipe (or --set target.* overrides) the masks were finalized for.")
    try:  # finalize checks each mask's shape against the base
        chosen = finalize({k: log_alpha_of(v) for k, v in masks.items()}, recipe.target, dims)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}; masks only fit the model they were chosen on.") from None
    if any(not torch.equal(chosen[k], masks[k]) for k in masks):
        raise UsageError(f"{where} keeps {_kept(masks)}, but the recipe's [target] asks for {_target(recipe)}; "
                         f"use the recipe (or --set target.* overrides) the masks were finalized for.")


def _kept(masks: dict[str, torch.Tensor]) -> str:
    """What the masks keep, in the recipe's words: heads and FFN counted over the kept layers only."""
    layers = masks.get("layer")
    parts = [f"layers {int(layers.sum())}"] if layers is not None else []
    for name in ("heads", "ffn"):
        if name in masks:
            rows = masks[name] if layers is None else masks[name][layers]
            parts.append(f"{name} {'/'.join(str(n) for n in sorted({int(c) for c in rows.sum(-1)}))} per layer")
    if "hidden" in masks:
        parts.append(f"hidden {int(masks['hidden'].sum())}")
    return ", ".join(parts)


def _target(recipe: Recipe) -> str:
    target = recipe.target
    if target.mode == "sparsity":
        return f"sparsity {target.sparsity}"
    return ", ".join(f"{k} {getattr(target, k)}" for k in ("layers", "heads", "ffn", "hidden")
                     if getattr(target, k) is not None)
