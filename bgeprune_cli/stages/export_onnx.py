"""`bgeprune export-onnx`: add ONNX graphs (fp32 and int8) to an existing export (docs/design.md, ONNX).

Holding the export's lock, it checks every file the graphs are traced from against the manifest,
writes `onnx/` complete or not at all (a temporary sibling inside the export, renamed into place;
`--force` replaces an existing `onnx/` the same way), then rewrites `manifest.json` atomically so
its file list covers every ONNX file and verify and every reader check their hashes, and last rewrites
the model card's Serving section to show how to run the graphs (README.md re-listed the same way). Killed
between the first two, the export holds an `onnx/` the manifest does not list, which verify reports; a rerun
with `--force` completes it. `export-hf --onnx` writes the same files as part of the export. The
amendment's argv is recorded as export-hf recorded its own: without absolute local paths unless the
export was written with `--local-paths` (published.py).

Example:
    bgeprune export-onnx out/smoke-m3 && bgeprune verify out/smoke-m3
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..artifacts import Artifact, amend_manifest, read_artifact
from ..atomic import atomic_dir, atomic_file, probe_writable
from ..errors import BgepruneError, UsageError, environment_error, os_error_in
from ..filenames import MODEL_CARD, ONNX_DIR
from ..locks import claim_output, recover_output
from ..models.card_sections import with_section
from ..models.card_serving import NAME, serving_section
from ..models.onnx.export import export_onnx, require_onnx
from ..models.st_files import read_pooling
from ..published import PublicPaths
from ..ui import step


def run(out: Path, *, force: bool = False, int8: bool = True) -> dict:
    require_onnx()  # exit 4 with the install command before anything is read
    out = Path(out)
    read_artifact(out, "hf-model", needed_by="export-onnx")  # not an export: exit 3 before taking a lock
    with claim_output(out):
        recover_output(out / ONNX_DIR)  # what a killed export-onnx left inside the export
        artifact = read_artifact(out, "hf-model", needed_by="export-onnx")  # as it is now that we hold the lock
        if (out / ONNX_DIR).exists() and not force:
            raise UsageError(f"{out / ONNX_DIR} exists; pass --force to replace it.")
        for entry in artifact.manifest["files"]:  # the graphs are traced from these: each must be as written
            if not entry["path"].startswith(ONNX_DIR + "/"):
                artifact.file(entry["path"])
        probe_writable(out)
        try:
            with step(f"tracing {out} into {out / ONNX_DIR}"), atomic_dir(out / ONNX_DIR) as tmp:
                info = export_onnx(out, tmp, int8=int8)
            with step(f"listing {ONNX_DIR}/ in {out}/manifest.json"):
                paths = PublicPaths(out, local=bool(artifact.info.get("local_paths")))
                amended = amend_manifest(artifact, ONNX_DIR, {"onnx": info}, argv=paths.argv(sys.argv))
            if amended.has_file(MODEL_CARD):
                with step(f"naming {ONNX_DIR}/ in {out / MODEL_CARD}"):
                    _rewrite_serving(amended, paths)
        except BgepruneError:
            raise
        except Exception as exc:
            error = os_error_in(exc)
            if error is not None:
                raise environment_error(error, f"writing {out / ONNX_DIR}") from exc
            raise
    return {"artifact": str(out), "kind": "hf-model", "onnx": info}


def _rewrite_serving(artifact: Artifact, paths: PublicPaths) -> None:
    """The card's Serving section again, now with the graphs; README.md re-listed in the manifest."""
    out, info = artifact.path, artifact.info
    card = artifact.file(MODEL_CARD).read_text(encoding="utf-8")
    section = serving_section(info.get("card_path") or paths.shown(out), has_heads=bool(info.get("m3_heads")),
                              pooling=read_pooling(out), dim=info["sizes"]["hidden"],
                              onnx_files=sorted(p.name for p in (out / ONNX_DIR).iterdir()))
    with atomic_file(out / MODEL_CARD) as tmp:
        tmp.write_text(with_section(card, NAME, section), encoding="utf-8")
    amend_manifest(artifact, MODEL_CARD, {}, argv=paths.argv(sys.argv))
