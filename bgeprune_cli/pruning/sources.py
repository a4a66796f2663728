"""Where a run's models come from: its base, its student weights, its masks, its pruned model.

Stages share these so that "the masked model" and "the pruned model" mean one thing everywhere.

Example:
    python -c "from bgeprune_cli.artifacts import read_artifact; from bgeprune_cli.pruning.sources import read_layout; \
print(read_layout(read_artifact('runs/smoke/masks', 'masks')).hidden)"
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..artifacts import Artifact
from ..errors import ArtifactError
from ..filenames import MASKS, STUDENT, WEIGHTS
from ..models import m3
from ..models.loading import load_model
from ..models.probe import model_outputs
from ..models.recipe_base import RecipeBase
from .hooks import MaskHooks, as_float_masks
from .masks import Layout


def source_model(train_run: Artifact, ctx: RecipeBase, attn_implementation: str | None = None):
    """The unpruned-shape model that masks apply to: the run's student weights, else the base."""
    model = load_model(ctx.base_dir, attn_implementation)
    if train_run.has_file(STUDENT):
        model.load_state_dict(load_file(str(train_run.file(STUDENT))), strict=True)
    return model


def source_heads(train_run: Artifact, ctx: RecipeBase) -> m3.M3Heads | None:
    """The unpruned-shape bge-m3 heads: the run's trained heads, else the base's (None: not bge-m3 style)."""
    if train_run.has_file(m3.HEADS_FILE):
        return m3.M3Heads.from_tensors(load_file(str(train_run.file(m3.HEADS_FILE))))
    return ctx.base_heads


def source_weights_file(train_run: Artifact, ctx: RecipeBase) -> Path | None:
    """The file the pruned tensors were sliced from, recorded in an export's lineage.json (None if not one file)."""
    if train_run.has_file(STUDENT):
        return train_run.path / STUDENT
    candidate = ctx.base_dir / WEIGHTS
    return candidate if candidate.is_file() else None


def read_masks(masks: Artifact) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bool) for k, v in load_file(str(masks.file(MASKS))).items()}


def read_layout(masks: Artifact) -> Layout:
    """The kept units, as finalize-masks recorded them in the masks artifact's manifest (their one home:
    later stages read it from there, never recompute it)."""
    layout = masks.info.get("layout")
    if not isinstance(layout, dict):
        raise ArtifactError(f"{masks.path}/manifest.json records no layout; re-run 'bgeprune finalize-masks'.")
    return Layout.from_json(layout)


def masked_outputs(model, ctx: RecipeBase, masks: dict[str, torch.Tensor], layout: Layout, batches: list[dict],
                   heads: m3.M3Heads | None) -> dict:
    """The masked model's outputs on `batches`: what `prune` checks the pruned model against and `verify`
    the export (gates at 0/1 through the hooks, LayerNorms over the kept hidden dims)."""
    with MaskHooks(model, ctx.adapter, as_float_masks(masks), layout.head_dim):
        return model_outputs(model, batches, ctx.pooling, layout.hidden, heads)
