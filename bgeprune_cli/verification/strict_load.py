"""verify's `strict-load` check: the export loaded as users load it, in a fresh interpreter.

The child (`fresh_load.py`) loads AutoModel with `output_loading_info`, the tokenizer and
SentenceTransformer, and writes the loading info and its probe outputs; this judges the report and
hands the outputs to the parity checks.

Example:
    bgeprune verify out/smoke      # the strict-load row
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import PROBE_MAX_LENGTH
from .static_checks import Check


def check_strict_load(out: Path, workdir: Path, texts: list[str]) -> tuple[Check, dict[str, torch.Tensor]]:
    if texts:
        (workdir / "texts.json").write_text(json.dumps(texts))
    command = [sys.executable, "-m", "bgeprune_cli.verification.fresh_load", str(out), str(workdir),
               str(PROBE_MAX_LENGTH)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    report_path = workdir / "loading.json"
    if proc.returncode != 0 or not report_path.is_file():
        return Check("strict-load", "fail", f"the loading process crashed: {proc.stderr.strip()[-500:]}"), {}
    report = json.loads(report_path.read_text())
    outputs_path = workdir / "outputs.safetensors"
    outputs = load_file(str(outputs_path)) if outputs_path.is_file() else {}
    problems = []
    if "automodel_error" in report:
        problems.append(f"AutoModel.from_pretrained failed: {report['automodel_error']}")
    info = report.get("loading_info", {})
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            problems.append(f"AutoModel {key.replace('_', ' ')}: {', '.join(info[key][:3])}"
                            + (f" (+{len(info[key]) - 3} more)" if len(info[key]) > 3 else ""))
    if "st_error" in report:
        problems.append(f"SentenceTransformer failed: {report['st_error']}")
    if problems:
        return Check("strict-load", "fail", "; ".join(problems), report), outputs
    return Check("strict-load", "pass", f"AutoModel loads with no missing/unexpected/mismatched keys; "
                 f"SentenceTransformer loads (dimension {report.get('st_dimension')})", report), outputs
