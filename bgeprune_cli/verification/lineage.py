"""Where an export came from, as verify reads it: `lineage.json`, the run's masks it names (or `--run`),
and `vocab_map.json` when the vocabulary was trimmed.

Example:
    bgeprune verify out/smoke --run runs/smoke
"""

from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import Artifact, read_artifact
from ..errors import ArtifactError
from ..filenames import LINEAGE, VOCAB_MAP
from ..models.tokenizers.vocab_map import VocabMap
from .static_checks import Check


def read_lineage(out: Path) -> dict | None:
    path = out / LINEAGE
    if not path.is_file():
        return None
    try:
        lineage = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupt ({exc}); export again with 'bgeprune export-hf'.") from None
    if not isinstance(lineage, dict):
        raise ArtifactError(f"{path} must hold a JSON object; export again with 'bgeprune export-hf'.")
    return lineage


def find_masks(run: Path | None, lineage: dict | None) -> Artifact | None:
    if run is not None:
        artifact = read_artifact(run, "masks", "pruned-model", needed_by="verify --run")
        return artifact if artifact.kind == "masks" else artifact.input("masks")
    for entry in (lineage or {}).get("artifacts", []):
        if entry["kind"] == "masks" and Path(entry["path"]).is_dir():
            return read_artifact(entry["path"], "masks")
    return None


def read_vocab_map(out: Path, lineage: dict | None, checks: list[Check]) -> VocabMap | None:
    """The export's vocab_map.json (lineage.json names it when the vocabulary was trimmed)."""
    try:
        vmap = VocabMap.read(out)
    except ArtifactError as exc:
        checks.append(Check("tokenizer", "fail", str(exc)))
        return None
    if vmap is None and (lineage or {}).get("vocab_map"):
        checks.append(Check("tokenizer", "fail", f"lineage.json says the vocabulary was trimmed but {VOCAB_MAP} is "
                            f"missing: sparse weights cannot be mapped to the base's token ids. Export again."))
    return vmap
