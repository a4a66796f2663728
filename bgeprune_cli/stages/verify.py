"""`bgeprune verify`: prove an export is exactly the pruned model and loads with nothing random.

Checks, each with its own message (exit 1 if any fails):
  files, manifest, finite, config-shapes, identity, serving-config, m3-heads
                 static checks (verification/static_checks.py)
  tokenizer      a trimmed vocabulary's rewritten tokenizer files agree with each other and map back
                 to the base's ids (verification/tokenizer_check.py); skipped when nothing was trimmed
  strict-load    AutoModel (output_loading_info) and SentenceTransformer in a fresh process
                 (verification/strict_load.py)
  provenance     every tensor equals the slice of the unpruned model it came from (verification/masked_parity.py)
  parity         export outputs == masked-model outputs on the probe batch (|diff| <= atol); for
                 bge-m3 bases the sparse token weights and ColBERT vectors too. With a trimmed
                 vocabulary: on the texts it covers, each side tokenizing with its own tokenizer, and
                 the sparse weights' token ids mapped back through vocab_map.json
  onnx-files, onnx-parity, onnx-int8   the graphs in onnx/, when the export has them (verification/onnx_checks.py)
  compare        with --compare REF: agreement with a reference model per mode (reported, not judged;
                 verification/reference.py)

This module is the list: the checks, their order and the verdict. A check that raises fails alone.

The run behind the export comes from `--run` or, when it is still where `lineage.json` says (relative to
the export) with the manifest hash it recorded, from there (verification/lineage.py).

Example:
    bgeprune verify out/smoke --compare builtin:tiny-xlm-roberta
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..artifacts import MANIFEST, ensure_writable, read_artifact, write_artifact, write_json
from ..errors import ArtifactError, BgepruneError, EnvironmentProblem, os_error_in
from ..filenames import REPORT
from ..locks import claim_output
from ..models.loading import load_tokenizer
from ..models.precision import TOLERANCES
from ..models.probe import probe_texts
from ..models.recipe_base import RecipeBase
from ..models.st_files import read_modules, read_pooling
from ..pruning.sources import read_layout, read_masks, source_heads, source_model
from ..ui import step
from ..verification import PROBE_MAX_LENGTH
from ..verification.lineage import find_masks, read_lineage, read_vocab_map
from ..verification.masked_parity import check_parity, check_provenance
from ..verification.onnx_checks import INT8_MIN_SPEARMAN, onnx_checks
from ..verification.reference import check_compare
from ..verification.static_checks import Check, static_checks
from ..verification.strict_load import check_strict_load
from ..verification.tokenizer_check import check_tokenizer


def run(export: Path, *, run_dir: Path | None = None, compare: str | None = None, atol: float | None = None,
        probe: Path | None = None, report: Path | None = None, force: bool = False,
        int8_min_spearman: float = INT8_MIN_SPEARMAN) -> dict:
    """Verify the export directory `export` (against its run: `run_dir`, else the one lineage.json names)."""
    out = Path(export)
    if not out.exists():
        raise ArtifactError(f"{out} does not exist; pass a model directory written by 'bgeprune export-hf'.")
    if not out.is_dir():
        raise ArtifactError(f"{out} is not a directory; pass a model directory written by 'bgeprune export-hf'.")
    # The same checked reader as every stage: wrong kind, a newer schema, a corrupt manifest or a path
    # that leaves the directory stop here (exit 3). Without a manifest it is verified as a foreign model.
    artifact = read_artifact(out, "hf-model", needed_by="verify") if (out / MANIFEST).is_file() else None
    read_modules(out)  # a modules.json path outside the directory: refuse before any loader follows it
    if report is not None:
        with claim_output(report):
            ensure_writable(report, force, "verify-report", [out])  # never inside the export it proves
            result = _verify(out, artifact, run_dir, compare, atol, probe, int8_min_spearman)
            # The export as input: `bgeprune card` checks that a report proved this very export.
            with write_artifact(report, "verify-report", force=force, info={"ok": result["ok"]},
                                inputs=[artifact] if artifact is not None else []) as tmp:
                write_json(tmp / REPORT, result)
        return result
    return _verify(out, artifact, run_dir, compare, atol, probe, int8_min_spearman)


def _contained(name: str, work: Callable[[], list[Check]]) -> list[Check]:
    """`work`'s checks, or one failed check named `name` saying what it raised: a file that breaks a
    loader (a graph from another export, say) fails its own check, and every other check still reports.
    The environment's problems (a missing package, a full disk) still stop verify with their exit code."""
    try:
        return work()
    except (EnvironmentProblem, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os_error_in(exc) is not None:
            raise
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return [Check(name, "fail", f"{exc.__class__.__name__}: {detail} (see the other checks, the manifest "
                      f"first, for what changed)")]


def _verify(out: Path, artifact, run_dir: Path | None, compare: str | None, atol: float | None,
            probe: Path | None, int8_min_spearman: float) -> dict:
    # An export whose weights export-hf rounded is proved at its dtype's tolerance; any other at float32's.
    rounded = artifact.info.get("dtype") if artifact is not None and artifact.info.get("rounded_from") else None
    tolerance = TOLERANCES.get(rounded or "float32", TOLERANCES["float32"])
    tolerance = replace(tolerance, atol=atol) if atol is not None else tolerance
    lineage = read_lineage(out)
    checks, exported = static_checks(out, artifact, lineage)  # the weights are read once; later checks reuse them
    exported_outputs: dict = {}
    masks_art, no_run = find_masks(out, run_dir, lineage)
    vmap, texts = read_vocab_map(out, lineage, checks), []
    if vmap is not None:
        with step("checking the trimmed tokenizer files"):
            base_dir = RecipeBase.of(masks_art).base_dir if masks_art is not None else None
            tokenizer_check, texts = check_tokenizer(out, vmap, masks_art, base_dir)
        checks.append(tokenizer_check)
    elif not any(c.name == "tokenizer" for c in checks):  # read_vocab_map reports a missing or corrupt map
        checks.append(check_tokenizer(out, None, None, None)[0])
    if exported:
        with step("loading the export in a fresh process"), tempfile.TemporaryDirectory() as workdir:
            load_check, exported_outputs = check_strict_load(out, Path(workdir), texts)
        checks.append(load_check)
        with step("running the ONNX graphs"):  # on the texts the fresh process encoded
            checks += _contained("onnx-parity", lambda: onnx_checks(
                out, artifact, exported_outputs, load_tokenizer(out), read_pooling(out), texts or probe_texts(),
                PROBE_MAX_LENGTH, int8_min_spearman))
    if masks_art is None or not exported:
        reason = no_run if masks_art is None else "no weights"
        checks += [Check("provenance", "skip", reason), Check("parity", "skip", reason)]
    else:
        with step("comparing with the masked model"):
            ctx = RecipeBase.of(masks_art)
            masks = read_masks(masks_art)
            layout = read_layout(masks_art)
            train = masks_art.input("train-run")
            model, heads = source_model(train, ctx), source_heads(train, ctx)
            padded = (lineage or {}).get("format") == "padded"
            checks += _contained("provenance", lambda: [
                check_provenance(exported, model, heads, out, ctx, layout, padded)])
            checks += _contained("parity", lambda: [
                check_parity(exported_outputs, model, heads, ctx, masks, layout, tolerance, texts, vmap,
                             rounded)])
    if compare:
        with step(f"comparing with {compare}"):
            try:
                checks.append(check_compare(out, compare, probe))
            except BgepruneError as exc:
                checks.append(Check("compare", "fail", f"cannot compare with {compare}: {exc}"))
    return {"model": str(out), "ok": all(c.status != "fail" for c in checks), "checks": [c.to_json() for c in checks]}
