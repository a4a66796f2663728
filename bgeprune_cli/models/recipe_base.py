"""The recipe behind an artifact and the base model it names: resolved, checked and read once.

Every stage that starts from a recipe or an artifact reads its base through this (check, magnitude,
train, finalize-masks, prune, export-hf, verify, bench), so a base is checked the same way everywhere.

Example:
    python -c "from bgeprune_cli.artifacts import read_artifact; from bgeprune_cli.models.recipe_base import \
RecipeBase; print(RecipeBase.of(read_artifact('runs/smoke/masks', 'masks')).dims)"
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..artifacts import Artifact
from ..config import BaseDims, Recipe, recipe_from_resolved
from . import m3
from .base_checks import check_base
from .families import Adapter, adapter_for
from .loading import read_config, resolve_base
from .st_files import read_pooling, read_prompts


@dataclass
class RecipeBase:
    """The recipe and base model behind an artifact."""

    recipe: Recipe

    @classmethod
    def of(cls, artifact: Artifact) -> "RecipeBase":
        return cls(recipe_from_resolved(artifact.recipe))

    @cached_property
    def base_dir(self) -> Path:
        directory = resolve_base(self.recipe.base.model, self.recipe.base.revision)
        check_base(directory)  # a base without its tokenizer (say) is refused before any work
        return directory

    @cached_property
    def base_config(self) -> dict:
        return read_config(self.base_dir)

    @property
    def adapter(self) -> Adapter:
        return adapter_for(self.base_config["model_type"])

    @property
    def dims(self) -> BaseDims:
        return BaseDims.from_config(self.base_config)

    @cached_property
    def pooling(self):
        return read_pooling(self.base_dir)

    @cached_property
    def prompts(self):
        """The base's query and passage prompts (training applies them as the base's users do)."""
        return read_prompts(self.base_dir)

    @cached_property
    def base_heads(self) -> m3.M3Heads | None:
        """bge-m3's sparse and ColBERT heads when the base has them (validated; None otherwise)."""
        return m3.load_heads(self.base_dir, self.dims.hidden)
