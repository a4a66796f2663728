"""`bgeprune finalize-masks`: deterministic binary keep-masks that hit the recipe's target exactly.

Reads a `train-run` artifact (gate scores), ranks units by score with ties broken by index, and
writes a `masks` artifact: `masks.safetensors` (bool tensors layer/heads/ffn/hidden) and a
human-readable `masks.json` (per layer: kept or not, kept heads, kept FFN count; hidden count).
With a `[vocab]` section it also chooses the kept token ids, once: the corpus tokenized with the base
tokenizer and counted (training/vocab_corpus.py). They go into the Layout in the manifest, beside the
other kept units, and a sample of the corpus into `vocab_sample.json` for verify.

Example:
    bgeprune finalize-masks runs/smoke/train          # -> runs/smoke/masks
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..artifacts import ensure_writable, read_artifact, write_artifact, write_json
from ..config import BaseDims, recipe_from_resolved
from ..errors import ArtifactError, UsageError
from ..filenames import GATES, MASKS, MASKS_SUMMARY, RECOVERY_MASKS, VOCAB_SAMPLE
from ..locks import claim_output
from ..models.recipe_base import RecipeBase
from ..pruning.masks import Layout, finalize, masks_summary
from ..training.convergence import pruning_gap_warning
from ..training.vocab_corpus import plan_vocabulary
from ..ui import step


def run(train_dir: Path, *, out: Path | None = None, force: bool = False) -> dict:
    train = read_artifact(train_dir, "train-run", needed_by="finalize-masks")
    out = Path(out or train.path.parent / "masks")
    with claim_output(out):
        return _finalize(train, out, force)


def _finalize(train, out: Path, force: bool) -> dict:
    ensure_writable(out, force, "masks", [train])
    recipe = recipe_from_resolved(train.recipe)
    dims = BaseDims(**train.info["base_dims"])
    if recipe.target.mode == "sparsity" and train.info.get("gate_kind") != "log_alpha":
        raise UsageError(f"{train.path} holds {train.info.get('gate_kind')} scores, not learned log_alpha; "
                         f"sparsity mode needs keep probabilities from 'bgeprune train'.")
    scores = load_file(str(train.file(GATES)))
    try:
        masks = finalize(scores, recipe.target, dims)
    except ValueError as exc:
        raise ArtifactError(f"{train.path}/{GATES}: {exc}") from None
    if train.has_file(RECOVERY_MASKS):
        _check_recovery_masks(train, masks)
    plan, vocab = None, None
    if recipe.vocab is not None:
        ctx = RecipeBase(recipe)
        plan = plan_vocabulary(recipe, ctx.base_dir, ctx.base_config)
        hidden = int(masks["hidden"].sum()) if "hidden" in masks else dims.hidden  # the kept table's width
        vocab = plan.summary(ctx.base_config.get("vocab_size", len(plan.files)), hidden, dims.hidden)
    try:
        layout = Layout.from_masks(masks, dims, plan.kept if plan else None)
    except ValueError as exc:
        raise ArtifactError(f"{train.path}/{GATES}: {exc}") from None
    summary = {**masks_summary(masks, layout), **({"vocab": vocab} if vocab else {})}
    info = {"layout": layout.to_json(), "summary": summary, "target": recipe.target.model_dump(),
            **({"vocab": vocab} if vocab else {})}
    with step(f"writing {out}"), write_artifact(out, "masks", force=force, recipe=train.recipe,
                                                 recipe_sha256=train.manifest["recipe_sha256"], inputs=[train],
                                                 info=info) as tmp:
        save_file({k: v.to(torch.bool).contiguous() for k, v in masks.items()}, str(tmp / MASKS))
        write_json(tmp / MASKS_SUMMARY, summary)
        if plan is not None:
            write_json(tmp / VOCAB_SAMPLE, plan.sample)
    return {"artifact": str(out), "kind": "masks", **summary, "warning": pruning_gap_warning(train.info)}


def _check_recovery_masks(train, masks: dict[str, torch.Tensor]) -> None:
    """The run's recovery phase trained the weights for its masks; any other masks would waste that."""
    used = load_file(str(train.file(RECOVERY_MASKS)))
    differ = sorted(k for k in set(used) | set(masks)
                    if k not in used or k not in masks or not torch.equal(used[k].to(torch.bool), masks[k]))
    if differ:
        raise ArtifactError(f"{train.path}: finalizing its gates gives other {', '.join(differ)} masks than its "
                            f"recovery phase trained with, so the recovered weights belong to other masks. Re-run "
                            f"'bgeprune train' to get a run whose gates and recovery masks agree.")
