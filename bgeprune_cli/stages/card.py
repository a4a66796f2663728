"""`bgeprune card`: put what verify and bench measured into an export's model card.

An export's card is written before anything is measured; this adds (or replaces) its "Measured"
section and the `model-index` front matter from a verify report and/or a bench report, then rewrites
`manifest.json` atomically so README.md's hash stays checked. Each report must have measured this
export: a verify report must name the export's manifest as its input, a bench report the export's (or
the pruned-model artifact it was exported from, whose weights it holds exactly). Commands in the card
are written without absolute local paths, like the rest of an export (published.py).

Example:
    bgeprune card out/minilm-50pct --verify runs/verify/minilm --bench runs/bench/minilm
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..artifacts import Artifact, amend_manifest, read_artifact
from ..atomic import atomic_file
from ..errors import ArtifactError, UsageError
from ..filenames import MODEL_CARD, REPORT
from ..locks import claim_output
from ..models.card_measured import bench_section, card_title, model_index, verify_section, with_measured
from ..published import PublicPaths
from ..ui import step


def run(export: Path, *, bench: Path | None = None, verify: Path | None = None) -> dict:
    if bench is None and verify is None:
        raise UsageError("nothing to add: pass --bench REPORT and/or --verify REPORT (the directories that "
                         "'bgeprune bench -o' and 'bgeprune verify --report' wrote)")
    export = Path(export)
    read_artifact(export, "hf-model", needed_by="card")  # not an export: exit 3 before taking a lock
    with claim_output(export):
        artifact = read_artifact(export, "hf-model", needed_by="card")
        measured = _measured_manifests(artifact)
        reports = {"verify": _report(verify, "verify-report", measured, artifact) if verify else None,
                   "bench": _report(bench, "bench-report", measured, artifact) if bench else None}
        card = artifact.file(MODEL_CARD).read_text(encoding="utf-8")  # hash-checked: the card as written
        paths = PublicPaths(export, local=bool(artifact.info.get("local_paths")))
        section = []
        if reports["verify"] is not None:
            section += verify_section(reports["verify"])
        if reports["bench"] is not None:
            section += bench_section({**reports["bench"], "command": _public(reports["bench"]["command"], paths)})
        index = model_index(card_title(card), reports["bench"]) if reports["bench"] is not None else []
        with step(f"writing {export / MODEL_CARD}"):
            with atomic_file(export / MODEL_CARD) as tmp:
                tmp.write_text(with_measured(card, section, index), encoding="utf-8")
            # The section is rebuilt from the reports given now; the manifest says which it holds.
            verified = reports["verify"]["ok"] if reports["verify"] is not None else None
            info = {"card": {"measured_manifests": sorted(measured), "verified": verified,
                             "benched": reports["bench"] is not None}}
            amend_manifest(artifact, MODEL_CARD, info, argv=paths.argv(sys.argv))
    return {"artifact": str(export), "kind": "hf-model", "card": str(export / MODEL_CARD),
            "verify": verify is not None, "bench": bench is not None, "model_index_results":
            sum(len(entry["results"]) for entry in index)}


def _measured_manifests(artifact: Artifact) -> set[str]:
    """Manifests a report may name for this export: its own now, the ones before earlier `card` runs
    (each rewrite changes the manifest, not the weights), and the pruned model it was exported from."""
    names = {artifact.manifest_sha256, *artifact.info.get("card", {}).get("measured_manifests", [])}
    names |= {e["manifest_sha256"] for e in artifact.manifest.get("inputs", []) if e.get("kind") == "pruned-model"}
    return names


def _report(directory: Path, kind: str, measured: set[str], export: Artifact) -> dict:
    report = read_artifact(directory, kind, needed_by="card")
    inputs = {e["manifest_sha256"] for e in report.manifest.get("inputs", [])}
    if not inputs & measured:
        command = "bgeprune verify EXPORT --report DIR" if kind == "verify-report" else \
            "bgeprune bench EXPORT --compare BASE -o DIR"
        raise ArtifactError(f"{directory} did not measure {export.path} (the {kind} names none of its manifests: "
                            f"another model, or the export changed since); run `{command}` again on this export")
    return report.read_json(REPORT)


def _public(command: str, paths: PublicPaths) -> str:
    """`command` as a published file writes it: the export as its card names it, other paths relative to it."""
    shown = paths.shown(paths.export)
    words = [shown if _is(word, paths.export) else word for word in shlex.split(command)]
    return shlex.join(paths.argv(words))


def _is(word: str, directory: Path) -> bool:
    try:
        return Path(word).expanduser().resolve() == directory.resolve()
    except (OSError, RuntimeError):
        return False
