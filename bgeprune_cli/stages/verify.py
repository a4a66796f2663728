"""`bgeprune verify`: prove an export is exactly the pruned model and loads with nothing random.

Checks, each with its own message (exit 1 if any fails):
  files, manifest, finite, config-shapes, identity, serving-config, m3-heads   static checks (checks.py)
  tokenizer      a trimmed vocabulary's rewritten tokenizer files agree with each other and map back
                 to the base's ids (verification/tokenizer_check.py); skipped when nothing was trimmed
  strict-load    AutoModel (output_loading_info) and SentenceTransformer in a fresh process
  provenance     every tensor equals the slice of the unpruned model it came from
  parity         export outputs == masked-model outputs on the probe batch (|diff| <= atol); for
                 bge-m3 bases the sparse token weights and ColBERT vectors too. With a trimmed
                 vocabulary: on the texts it covers, each side tokenizing with its own tokenizer, and
                 the sparse weights' token ids mapped back through vocab_map.json
  onnx-files, onnx-parity, onnx-int8   the graphs in onnx/, when the export has them (verification/onnx_checks.py)
  compare        with --compare REF: agreement with a reference model per mode (reported, not judged)

The run behind the export comes from `--run` or, when it still exists, from `lineage.json`.

Example:
    bgeprune verify out/smoke --compare builtin:tiny-xlm-roberta
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from ..artifacts import MANIFEST, Artifact, ensure_writable, read_artifact, write_artifact, write_json
from ..bench.agreement import agreement, compare_models, m3_agreement
from ..errors import ArtifactError, BgepruneError, EnvironmentProblem, os_error_in
from ..filenames import CONFIG, LINEAGE, REPORT, TOKENIZER_FILES, VOCAB_MAP, WEIGHTS
from ..locks import claim_output
from ..models import m3
from ..models.loading import load_tokenizer
from ..models.probe import max_abs_diff, model_outputs, per_text, probe_batches, probe_texts
from ..models.st_files import read_modules, read_pooling
from ..models.vocab_map import VocabMap
from ..pruning.hooks import MaskHooks, as_float_masks
from ..pruning.masks import Layout
from ..pruning.slicing import pad_to_stock, slice_state_dict
from ..pruning.sources import RunContext, read_layout, read_masks, source_heads, source_model
from ..ui import step
from ..verification.onnx_checks import INT8_MIN_SPEARMAN, onnx_checks
from ..verification.static_checks import (
    Check,
    check_config_shapes,
    check_files,
    check_finite,
    check_identity,
    check_m3_heads,
    check_manifest,
    check_serving_config,
)
from ..verification.tokenizer_check import check_tokenizer

PROBE_MAX_LENGTH = 64


def _load_in_fresh_process(out: Path, workdir: Path, texts: list[str]) -> tuple[Check, dict[str, torch.Tensor]]:
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


def _find_masks(run: Path | None, lineage: dict | None) -> Artifact | None:
    if run is not None:
        artifact = read_artifact(run, "masks", "pruned-model", needed_by="verify --run")
        return artifact if artifact.kind == "masks" else artifact.input("masks")
    for entry in (lineage or {}).get("artifacts", []):
        if entry["kind"] == "masks" and Path(entry["path"]).is_dir():
            return read_artifact(entry["path"], "masks")
    return None


def _provenance(exported: dict, model, heads, out: Path, ctx: RunContext, layout: Layout, padded: bool) -> Check:
    expected = slice_state_dict(model.state_dict(), ctx.adapter, layout)
    if padded:
        expected, _ = pad_to_stock(expected, ctx.adapter, layout)
    if heads is not None and m3.has_heads(out):  # the head files are slices of the run's heads too
        try:
            exported_heads = m3.load_heads(out).tensors()
        except ArtifactError:
            exported_heads = {}  # the m3-heads check reports why
        exported = {**exported, **{f"{m3.HEADS_FILE}:{k}": v for k, v in exported_heads.items()}}
        expected.update({f"{m3.HEADS_FILE}:{k}": v for k, v in
                         heads.sliced(layout.hidden, ctx.dims.hidden).tensors().items() if exported_heads})
    foreign = sorted(set(exported) - set(expected))
    differ = sorted(k for k in set(exported) & set(expected)
                    if not torch.equal(exported[k], expected[k].to(exported[k].dtype)))
    if foreign or differ:
        worst = {k: float((exported[k].float() - expected[k].float()).abs().max()) for k in differ[:3]
                 if exported[k].shape == expected[k].shape}
        return Check("provenance", "fail", f"{len(differ)} tensor(s) are not the slice of the unpruned model "
                     f"they claim to be (re-initialised, identity or edited?): {', '.join(differ[:3])} "
                     f"max diff {worst}; {len(foreign)} tensor(s) have no source: {', '.join(foreign[:3])}",
                     {"differ": differ, "foreign": foreign})
    return Check("provenance", "pass", f"all {len(exported)} tensors are exact slices of the unpruned model")


def _parity(exported_outputs: dict, model, heads, ctx: RunContext, masks: dict, layout: Layout,
            atol: float, texts: list[str], vmap: VocabMap | None) -> Check:
    if not exported_outputs:
        return Check("parity", "fail", "no outputs from the exported model (it did not load)")
    if vmap is not None and not texts:
        return Check("parity", "skip", "no text to compare on: the tokenizer check found none that the trimmed "
                     "vocabulary covers (see its message)")
    if vmap is not None and "sparse_token_ids" in exported_outputs:  # lexical weights are keyed by token id
        exported_outputs = {**exported_outputs,
                            "sparse_token_ids": vmap.ids_to_base(exported_outputs["sparse_token_ids"])}
    batches = probe_batches(load_tokenizer(ctx.base_dir), texts or probe_texts(), PROBE_MAX_LENGTH)
    with MaskHooks(model, ctx.adapter, as_float_masks(masks), layout.head_dim):
        masked = model_outputs(model, batches, ctx.pooling, layout.hidden, heads)
    masked["st_embedding"] = per_text(masked["embedding"])
    diffs = max_abs_diff(masked, exported_outputs)
    absent = sorted(set(masked) - set(diffs))
    if absent:  # e.g. the export's head files are missing or unreadable: no sparse/ColBERT outputs
        return Check("parity", "fail", f"the export produced no {', '.join(absent)} output to compare (see the "
                     f"m3-heads check)", {"max_abs_diff": diffs, "absent": absent})
    worst = max(diffs.values())
    status = "pass" if worst <= atol else "fail"
    where = f" on the {len(texts)} texts the trimmed vocabulary covers" if vmap is not None else ""
    return Check("parity", status, f"max |export - masked| = {worst:.2e} ({'<=' if status == 'pass' else '>'} "
                 f"atol {atol:g}){where} over " + (
                     "AutoModel states, pooler, SentenceTransformer embeddings, sparse weights (token ids mapped back "
                     "through vocab_map.json) and ColBERT vectors" if "colbert" in diffs and vmap is not None else
                     "AutoModel states, pooler, SentenceTransformer embeddings, sparse weights and ColBERT vectors"
                     if "colbert" in diffs else "AutoModel states, pooler and SentenceTransformer embeddings"),
                 {"max_abs_diff": diffs})


def _compare(out: Path, reference: str, probe: Path | None) -> Check:
    numbers = compare_models(out, reference, probe_texts(probe))
    parts = []
    for mode in ("dense", "sparse", "colbert"):
        if mode in numbers:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in numbers[mode].items() if isinstance(v, float))
            parts.append(f"{mode}: {shown}")
    note = f" ({numbers['note']})" if "note" in numbers else ""
    return Check("compare", "info", f"agreement with {reference} on {numbers['texts']} texts: "
                 + "; ".join(parts) + note, numbers)


def run(out: Path, run: Path | None = None, compare: str | None = None, atol: float = 1e-5,
        probe: Path | None = None, report: Path | None = None, force: bool = False,
        int8_min_spearman: float = INT8_MIN_SPEARMAN) -> dict:
    out = Path(out)
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
            result = _verify(out, artifact, run, compare, atol, probe, int8_min_spearman)
            with write_artifact(report, "verify-report", force=force, info={"ok": result["ok"]}) as tmp:
                write_json(tmp / REPORT, result)
        return result
    return _verify(out, artifact, run, compare, atol, probe, int8_min_spearman)


def _agreement(ref: m3.M3Output, got: m3.M3Output, with_heads: bool) -> dict:
    """Per-mode agreement of two encodings of the same texts (verify's onnx-int8 check)."""
    return m3_agreement(ref, got) if with_heads else {"dense": agreement(ref.dense, got.dense)}


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


def _vocab_map(out: Path, lineage: dict | None, checks: list[Check]) -> VocabMap | None:
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


def _read_lineage(out: Path) -> dict | None:
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


def _verify(out: Path, artifact, run: Path | None, compare: str | None, atol: float, probe: Path | None,
            int8_min_spearman: float) -> dict:
    lineage = _read_lineage(out)
    listed = {e["path"] for e in artifact.manifest["files"]} if artifact else set()
    checks = [check_files(out, [f for f in TOKENIZER_FILES if f in listed] or None), check_manifest(out, artifact)]
    exported_outputs: dict = {}
    exported: dict[str, torch.Tensor] = {}
    if (out / CONFIG).is_file() and (out / WEIGHTS).is_file():
        exported = load_file(str(out / WEIGHTS))  # read once; three checks use it
        checks += [check_finite(exported), check_config_shapes(out), check_identity(exported),
                   check_serving_config(out)]
    expect_heads = bool((lineage or {}).get("m3_heads") or (artifact and artifact.info.get("m3_heads")))
    checks.append(check_m3_heads(out, expect_heads))
    masks_art = _find_masks(run, lineage)
    vmap, texts = _vocab_map(out, lineage, checks), []
    if vmap is not None:
        with step("checking the trimmed tokenizer files"):
            base_dir = RunContext.of(masks_art).base_dir if masks_art is not None else None
            tokenizer_check, texts = check_tokenizer(out, vmap, masks_art, base_dir)
        checks.append(tokenizer_check)
    elif not any(c.name == "tokenizer" for c in checks):  # _vocab_map reports a missing or corrupt map
        checks.append(check_tokenizer(out, None, None, None)[0])
    if exported:
        with step("loading the export in a fresh process"), tempfile.TemporaryDirectory() as workdir:
            load_check, exported_outputs = _load_in_fresh_process(out, Path(workdir), texts)
        checks.append(load_check)
        with step("running the ONNX graphs"):  # on the texts the fresh process encoded
            checks += _contained("onnx-parity", lambda: onnx_checks(
                out, artifact, exported_outputs, load_tokenizer(out), read_pooling(out), texts or probe_texts(),
                PROBE_MAX_LENGTH, int8_min_spearman, _agreement))
    if masks_art is None or not exported:
        reason = "no run to compare with (pass --run RUN_DIR)" if masks_art is None else "no weights"
        checks += [Check("provenance", "skip", reason), Check("parity", "skip", reason)]
    else:
        with step("comparing with the masked model"):
            ctx = RunContext.of(masks_art)
            masks = read_masks(masks_art)
            layout = read_layout(masks_art)
            train = masks_art.input("train-run")
            model, heads = source_model(train, ctx), source_heads(train, ctx)
            padded = (lineage or {}).get("format") == "padded"
            checks += _contained("provenance", lambda: [_provenance(exported, model, heads, out, ctx, layout, padded)])
            checks += _contained("parity", lambda: [_parity(exported_outputs, model, heads, ctx, masks, layout, atol,
                                                            texts, vmap)])
    if compare:
        with step(f"comparing with {compare}"):
            try:
                checks.append(_compare(out, compare, probe))
            except BgepruneError as exc:
                checks.append(Check("compare", "fail", f"cannot compare with {compare}: {exc}"))
    return {"model": str(out), "ok": all(c.status != "fail" for c in checks), "checks": [c.to_json() for c in checks]}
