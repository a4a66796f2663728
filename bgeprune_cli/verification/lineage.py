"""Where an export came from, as verify reads it: `lineage.json`, the run's masks it names (or `--run`),
and `vocab_map.json` when the vocabulary was trimmed.

lineage.json names each artifact by a path relative to the export (an older export or `--local-paths`:
an absolute one), or by name only where no relative path meant anything (published.py), with the manifest
hash it had. The masks found there are used only when their manifest still has that hash: a copy of the
export moved elsewhere, or a run made again, is not the run it came from, and verify says so.

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
from ..published import resolve_recorded
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


NO_RUN = "no run to compare with (pass --run RUN_DIR)"


def find_masks(out: Path, run: Path | None, lineage: dict | None) -> tuple[Artifact | None, str]:
    """The masks artifact behind the export at `out` (from `--run`, else where lineage.json leads), or None
    and why there is none (the reason provenance and parity are skipped)."""
    if run is not None:
        artifact = read_artifact(run, "masks", "pruned-model", needed_by="verify --run")
        return (artifact if artifact.kind == "masks" else artifact.input("masks")), ""
    for entry in (lineage or {}).get("artifacts", []):
        if not (isinstance(entry, dict) and entry.get("kind") == "masks" and isinstance(entry.get("path"), str)):
            continue
        path = resolve_recorded(entry["path"], out)
        if not path.is_dir():
            return None, f"{NO_RUN}: lineage.json's masks, {entry['path']}, are not at {path}"
        artifact = read_artifact(path, "masks")
        if entry.get("manifest_sha256") not in (None, artifact.manifest_sha256):
            return None, (f"{NO_RUN}: the masks at {path} are not the ones this export was made from (their "
                          f"manifest hash differs from lineage.json's)")
        return artifact, ""
    return None, NO_RUN


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
