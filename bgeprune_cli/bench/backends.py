"""Backends for `bgeprune bench`: a model in PyTorch, or an ONNX graph of it (fp32 or dynamic int8).

`--backend` lists MODEL's backends and `--compare-backend` the base's (default: the same list), any
subset of torch, onnx, onnx-int8. Each (model, backend) is one entry, measured like any model. The
first backend of MODEL is the entry `model` and the base's first is `base`, so the headline is always
MODEL's first backend against the base's first: `--backend onnx-int8 --compare-backend torch` puts
the pruned int8 graph against the unpruned model in PyTorch. The others are `model@onnx`,
`base@onnx-int8` and so on, each with its speedup over `base` and over the base on its own backend.

An export's graphs come from its `onnx/`, checked against its manifest (what `verify` proved).
Any other model directory (a base, a foreign model) is traced at bench time by the same exporter
(models/onnx/export.py) into a temporary directory that lives as long as the bench run; the report
says which for each entry (`graph_source`). Graphs run on onnxruntime's CPU provider.

Example:
    bgeprune bench out/minilm-50pct --backend onnx-int8,onnx,torch --compare builtin:all-minilm-l6-v2 \\
        --compare-backend torch,onnx-int8
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from ..filenames import ONNX_DATA, ONNX_DIR, ONNX_INT8, ONNX_MODEL
from ..models.onnx.export import export_onnx
from ..models.onnx.runtime import OnnxEncoder
from ..ui import step
from .models import BenchModel, label_of

BACKENDS = ("torch", "onnx", "onnx-int8")
GRAPH_FILE = {"onnx": ONNX_MODEL, "onnx-int8": ONNX_INT8}


def parse_backends(text: str | None, flag: str) -> list[str] | None:
    """`torch,onnx-int8` -> ["torch", "onnx-int8"]; every name known, none twice (exit 2 otherwise)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown or len(set(names)) != len(names):
        raise UsageError(f"{flag} takes a comma-separated list of distinct backends from {', '.join(BACKENDS)}, "
                         f"not {text!r}")
    return names


def entry_key(role: str, backend: str, first: bool) -> str:
    return role if first else f"{role}@{backend}"


def same_backend_pairs(models: dict[str, BenchModel]) -> dict[str, str]:
    """Each MODEL entry -> the base entry on the same backend, when the base was run on it too."""
    bases = {m.backend: key for key, m in models.items() if key == "base" or key.startswith("base@")}
    return {key: bases[m.backend] for key, m in models.items()
            if (key == "model" or key.startswith("model@")) and m.backend in bases}


def with_backend(model: BenchModel, backend: str, scratch: Path) -> BenchModel:
    """`model` on `backend`: itself for torch, else the same model described, run by its ONNX graph."""
    if backend == "torch":
        return model
    path, source = _graph_file(model, backend, scratch)
    files = [path] + ([path.parent / ONNX_DATA] if (path.parent / ONNX_DATA).is_file() and backend == "onnx" else [])
    return replace(model, backend=backend, graph=OnnxEncoder(path), graph_source=source, weight_files=files)


def _graph_file(model: BenchModel, backend: str, scratch: Path) -> tuple[Path, str]:
    name = GRAPH_FILE[backend]
    artifact = model.artifact
    listed = (artifact.info.get("onnx") or {}).get("files", {}) if artifact is not None else {}
    if artifact is not None and artifact.kind == "hf-model" and name in listed.values():
        needed = [name] + ([listed["fp32_data"]] if name == ONNX_MODEL and "fp32_data" in listed else [])
        for file in needed:  # as verify proved them: a changed or truncated graph exits 3, named
            artifact.file(f"{ONNX_DIR}/{file}")
        return artifact.path / ONNX_DIR / name, f"{ONNX_DIR}/ of the export (checked against its manifest)"
    if model.kind == "pruned-model":
        raise UsageError(f"{model.spec} is a run's pruned model: the ONNX backends run an export's graphs. Export it "
                         f"with 'bgeprune export-hf {model.spec} OUT --onnx' and bench OUT.")
    # One trace per directory and run: its fp32 and int8 graphs serve both ONNX backends.
    target = scratch / hashlib.sha256(str(model.directory.resolve()).encode()).hexdigest()[:16]
    if not (target / ONNX_MODEL).is_file():
        target.mkdir(exist_ok=True)
        with step(f"tracing {label_of(model.spec)} to ONNX (it has no onnx/ of its own)"):
            export_onnx(model.directory, target)
    return target / name, f"traced at bench time from {model.directory}"
