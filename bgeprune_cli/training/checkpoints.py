"""Training checkpoints: everything a resumed run needs to continue bit for bit, written atomically.

A checkpoint is an artifact directory `RUN/checkpoints/step-NNNNNNNN/` (kind `checkpoint`),
written like every artifact: temporary sibling, fsync, manifest last, rename. Older checkpoints
are deleted only after the new one is committed, so a crash at any moment leaves at least one
complete checkpoint. Tensors are safetensors; optimizer, scheduler, RNG and data-position state
(nested dicts of tensors and numbers) go in `state.pt`, read back with `weights_only=True`.

Example:
    bgeprune train recipes/smoke.toml --resume      # continues from the newest complete checkpoint
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..artifacts import Artifact, read_artifact, write_artifact
from ..errors import ArtifactError
from ..filenames import CHECKPOINT_STATE, MANIFEST

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")
# Each checkpoint holds <name>.safetensors for these keys of the `tensors` dict passed to `save`.
TENSOR_FILES = ("student", "gates", "extras")


@dataclass
class Checkpoint:
    artifact: Artifact

    @property
    def step(self) -> int:
        return int(self.artifact.info["step"])

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.artifact.file(f"{name}.safetensors")))

    def state(self) -> dict:
        path = self.artifact.file(CHECKPOINT_STATE)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign pickle: refuse, never execute
            raise ArtifactError(f"{path} cannot be read safely ({exc.__class__.__name__}); "
                                f"delete {self.artifact.path} to resume from the one before.") from None


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Committed checkpoint directories, oldest first (temporary leftovers of a crash are ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _NAME.match(p.name) and (p / MANIFEST).is_file())


def latest(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint whose manifest reads back; a damaged newest one falls back to the one before."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return Checkpoint(read_artifact(path, "checkpoint"))
        except ArtifactError:
            continue
    return None


def save(run_dir: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict, info: dict,
         recipe: dict, recipe_sha256: str, keep: int) -> Path:
    """Commit a checkpoint, then delete all but the newest `keep` (and crash leftovers)."""
    root = checkpoint_dir(run_dir)
    out = root / f"step-{step:08d}"
    with write_artifact(out, "checkpoint", force=True, recipe=recipe, recipe_sha256=recipe_sha256,
                        info={**info, "step": step}) as tmp:
        for name in TENSOR_FILES:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors[name].items()},
                      str(tmp / f"{name}.safetensors"))
        with open(tmp / CHECKPOINT_STATE, "wb") as handle:  # a Python file, so a full disk surfaces as its OSError
            torch.save(state, handle)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return out


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "gates": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["gates"])
    if "cuda" in state and torch.cuda.is_available():
        # A resume may see fewer GPUs than the run that wrote the checkpoint (another world size).
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
