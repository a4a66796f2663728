"""`bgeprune bench`: speed, memory, size and quality of a model side by side with its base.

Top to bottom: read the quality data (bad data fails before any model loads), load both models,
measure size and FLOPs, time the speed grid (interleaved), measure peak memory (one fresh process
per model), for a trimmed vocabulary its coverage of the quality data (bench/coverage.py), score
quality per retrieval mode, then write a `bench-report` artifact: report.json (numbers, environment,
command) and report.png (quality vs throughput, kept layers).

The headline is the grid point batch 32 × 128 tokens when the grid has it (else its largest point):
speedup (measured), FLOPs speedup (theoretical), and their ratio, the speedup efficiency.
`--backend` / `--compare-backend` run each model on several backends (PyTorch, ONNX fp32, ONNX int8;
bench/backends.py): every (model, backend) is an entry measured like the rest, and the headline is
MODEL's first backend against the base's first.

Example:
    bgeprune bench out/minilm-50pct --compare builtin:all-minilm-l6-v2 --beir ../shared/data/pydocs
"""

from __future__ import annotations

import os
import platform
import shlex
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..artifacts import ensure_writable, library_versions, write_artifact, write_json
from ..bench.backends import entry_key, same_backend_pairs, with_backend
from ..bench.coverage import coverage
from ..bench.eval_data import load_beir, load_bitext
from ..bench.memory import measure_in_child
from ..bench.models import label_of, load_bench_model
from ..bench.plot import write_report_png
from ..bench.quality import AGREEMENT_TEXTS, evaluate
from ..bench.size import ratios, size_summary
from ..bench.speed import add_ratios, default_grid, measure_grid
from ..device import resolve_device
from ..errors import UsageError
from ..filenames import REPORT, REPORT_PNG
from ..locks import claim_output
from ..models.probe import probe_texts
from ..ui import Progress, step

HEADLINE = (32, 128)


@dataclass
class BenchOptions:
    beir: list[Path] = field(default_factory=list)
    bitext: list[Path] = field(default_factory=list)
    batch_sizes: list[int] | None = None  # None: default_grid(device)
    seq_lengths: list[int] | None = None
    warmup: int = 2
    repeats: int = 10
    device: str | None = None  # None: cuda if available
    dtype: str | None = None  # None: float32 on CPU, float16 on CUDA
    attn: str | None = None  # None: the transformers default (sdpa where supported)
    max_length: int = 512
    quality_batch_size: int = 32
    speed: bool = True
    memory: bool = True
    mteb: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=lambda: ["torch"])  # MODEL's; the first is the entry "model"
    compare_backends: list[str] | None = None  # the base's (None: the same as MODEL's); the first is "base"


def _resolve(options: BenchOptions) -> tuple[str, torch.dtype, list[int], list[int]]:
    device = str(resolve_device(options.device))
    dtype_name = options.dtype or ("float16" if device.startswith("cuda") else "float32")
    if dtype_name not in ("float32", "float16", "bfloat16"):
        raise UsageError(f"--dtype must be float32, float16 or bfloat16, not {dtype_name!r}")
    batches, lengths = default_grid(device)
    batches, lengths = options.batch_sizes or batches, options.seq_lengths or lengths
    if min(batches) < 1 or min(lengths) < 2 or options.repeats < 2 or options.warmup < 0:
        raise UsageError("batch sizes must be >= 1, sequence lengths >= 2, --repeats >= 2 and --warmup >= 0")
    if any(b != "torch" for b in options.backends + (options.compare_backends or [])):
        if device != "cpu":
            raise UsageError(f"the ONNX backends run on onnxruntime's CPU provider; pass --device cpu (not {device})")
        from ..models.onnx.export import require_onnx

        require_onnx()  # exit 4 with the install command before any model loads
    return device, getattr(torch, dtype_name), batches, lengths


def _environment(device: str, dtype: torch.dtype, models: dict) -> dict:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
           "dtype": str(dtype).removeprefix("torch."), "versions": library_versions(),
           "attn_implementation": {name: m.attn_implementation for name, m in models.items()}}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
    graphs = [m.graph for m in models.values() if m.graph is not None]
    if graphs:
        import onnxruntime

        env.update(onnxruntime=onnxruntime.__version__, onnx_threads=graphs[0].threads)
    return env


def _headline_point(points: list[dict]) -> dict | None:
    if not points:
        return None
    exact = [p for p in points if (p["batch"], p["length"]) == HEADLINE]
    return exact[0] if exact else max(points, key=lambda p: (p["batch"] * p["length"], p["length"]))


def _quality_headline(quality: dict) -> tuple[str, str, dict] | None:
    """(label, mode, per-model values) of the first of: BEIR nDCG@10, bitext accuracy, agreement."""
    if quality.get("beir"):
        name, data = next(iter(quality["beir"].items()))
        return f"{name} nDCG@10", "ndcg@10", data["modes"]
    if quality.get("bitext_mean"):
        return "bitext accuracy (mean)", "accuracy", quality["bitext_mean"]
    if quality.get("agreement"):  # no data given: agreement with the base (which agrees with itself fully)
        modes = {mode: {"model": {"top10_overlap": a.get("top10_overlap", 0.0)}, "base": {"top10_overlap": 1.0}}
                 for mode, a in quality["agreement"]["modes"].items()}
        for values in modes.values():
            values["ratio"] = values["model"]
        return "top-10 neighbour overlap with the base", "top10_overlap", modes
    return None


def _plot_points(models: dict, point: dict | None, quality: dict) -> tuple[list[dict], str]:
    headline = _quality_headline(quality)
    if point is None or headline is None:
        return [], ""
    label, metric, modes = headline
    points = [{"role": role, "label": models[role].label, "mode": mode, "x": point[role]["sentences_per_s"],
               "y": values[role][metric]} for mode, values in modes.items() for role in models if role in values]
    return points, label


def run(model: str, compare: str | None, out: Path | None, force: bool, options: BenchOptions) -> dict:
    device, dtype, batch_sizes, lengths = _resolve(options)
    options = replace(options, device=device, dtype=str(dtype).removeprefix("torch."), batch_sizes=batch_sizes,
                      seq_lengths=lengths, compare_backends=(options.compare_backends or options.backends)
                      if compare else None)
    beir = [load_beir(path) for path in options.beir]
    bitext = [s for path in options.bitext for s in load_bitext(path)]
    out = Path(out or Path("runs") / "bench" / label_of(model))
    with claim_output(out), ExitStack() as stack:
        # Graphs traced at bench time (models without an onnx/ of their own) live here for the run.
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bgeprune-bench-onnx-")))
        return _bench(model, compare, out, force, options, beir, bitext, scratch)


def _bench(model: str, compare: str | None, out: Path, force: bool, options: BenchOptions, beir: list,
           bitext: list, scratch: Path) -> dict:
    local = [Path(spec) for spec in (model, compare) if spec and Path(spec).expanduser().is_dir()]
    ensure_writable(out, force, "bench-report", local)  # never over a model it measures
    device, dtype = options.device, getattr(torch, options.dtype)
    batch_sizes, lengths = options.batch_sizes, options.seq_lengths
    specs = [("model", model, options.backends)] + ([("base", compare, options.compare_backends)] if compare else [])
    models = {}
    for role, spec, backends in specs:
        with step(f"loading {role} {spec}"):
            loaded = load_bench_model(spec, dtype, options.attn, device)
        for number, backend in enumerate(backends):  # one PyTorch model describes (and may run) every entry
            models[entry_key(role, backend, number == 0)] = with_backend(loaded, backend, scratch)

    sizes = {role: size_summary(m) for role, m in models.items()}
    result: dict = {"command": _command(model, compare, out, options), "models": {
        role: {"spec": m.spec, "label": m.label, "kind": m.kind, "directory": str(m.directory),
               "backend": m.backend, "dtype": m.dtype_name, "attn_implementation": m.attn_implementation,
               **({"graph": str(m.graph.path), "graph_source": m.graph_source} if m.graph is not None else {}),
               "m3_heads": m.heads is not None, **sizes[role]} for role, m in models.items()},
        "environment": _environment(device, dtype, models),
        "options": {**asdict(options), "beir": list(map(str, options.beir)), "bitext": list(map(str, options.bitext))}}
    if compare:
        result["size_ratio"] = ratios(sizes["model"], sizes["base"])

    points: list[dict] = []
    if options.speed:
        with Progress("speed", len(batch_sizes) * len(lengths) * options.repeats) as progress:
            points = measure_grid(models, batch_sizes, lengths, options.warmup, options.repeats, progress)
        if compare:
            add_ratios(points, same_backend={k: v for k, v in same_backend_pairs(models).items() if k != v})
    result["speed"] = points
    point = _headline_point(points)
    result["headline"] = {"batch": point["batch"], "length": point["length"]} if point else {}
    if point and compare:
        result["headline"].update({k: point[k] for k in ("speedup", "flops_speedup", "speedup_efficiency")})

    if options.memory:
        batch, length = (point["batch"], point["length"]) if point else HEADLINE
        with step(f"peak memory at batch {batch} × {length} (one fresh process per model)"):
            memory = {role: measure_in_child(m.spec, str(dtype).removeprefix("torch."), options.attn, device,
                                             batch, length, m.graph.path if m.graph is not None else None,
                                             m.directory) for role, m in models.items()}
        key = "peak_allocated_bytes" if device.startswith("cuda") else "model_rss_bytes"
        if compare and all(key in memory[r] for r in ("model", "base")):
            memory["ratio"] = memory["model"][key] / memory["base"][key]
            memory["ratio_of"] = key
            memory["ratios"] = {role: memory[role][key] / memory["base"][key] for role in models
                                if role != "base" and key in memory[role]}
        result["memory"] = memory

    result["coverage"] = coverage(models, beir, bitext)  # a trimmed vocabulary on the quality data; None otherwise
    texts = _agreement_texts(beir, bitext)
    result["quality"] = evaluate(models, beir, bitext, texts, options.max_length, options.quality_batch_size)
    headline = _quality_headline(result["quality"])
    if headline and compare and headline[1] != "top10_overlap":  # agreement alone is not a quality measure
        label, metric, modes = headline
        result["headline"].update(quality_metric=label, quality_ratio=modes["dense"]["ratio"].get(metric))
    if len(models) > 2 or any(m.backend != "torch" for m in models.values()):
        result["headline"]["entries"] = _entries_headline(models, point, result.get("memory", {}), headline)
    if options.mteb:
        from ..bench.mteb import run_mteb

        with step(f"MTEB {', '.join(options.mteb)}"):
            result["mteb"] = run_mteb(models, options.mteb)

    inputs = [m.artifact for m in models.values() if m.artifact is not None]
    plot_points, y_label = _plot_points(models, point, result["quality"])
    layout = models["model"].layout
    with step(f"writing {out}"), write_artifact(out, "bench-report", force=force, inputs=inputs,
                                                info={"headline": result["headline"]}) as tmp:
        result["artifact"] = str(out)
        if plot_points or layout is not None:
            x_label = (f"sentences/s at batch {point['batch']} × {point['length']} tokens "
                       f"({result['environment']['device']}, {result['environment']['dtype']})") if point else ""
            write_report_png(tmp / REPORT_PNG, plot_points, x_label, y_label, layout, result["command"])
            result["report_png"] = str(out / REPORT_PNG)
        write_json(tmp / REPORT, result)
    return result


def _entries_headline(models: dict, point: dict | None, memory: dict, quality) -> dict:
    """Per (model, backend) entry at the headline point: throughput, its ratios, memory, the quality headline."""
    entries = {}
    for key, m in models.items():
        row = {"label": m.label, "backend": m.backend}
        if point:
            row.update({k: point[key][k] for k in ("sentences_per_s", "p50_ms", "p99_ms", "speedup_vs_base",
                                                   "speedup_vs_base_same_backend") if k in point[key]})
        if key in memory and "model_rss_bytes" in memory[key]:
            row["model_rss_bytes"] = memory[key]["model_rss_bytes"]
        if quality and quality[1] != "top10_overlap":
            values = quality[2]["dense"]
            row["quality"] = values[key][quality[1]]
            ratio = values.get("ratio") if key == "model" else values.get("ratios", {}).get(key)
            if ratio is not None:
                row["quality_vs_base"] = ratio.get(quality[1])
        entries[key] = row
    return entries


def _command(model: str, compare: str | None, out: Path, options: BenchOptions) -> str:
    """The command that reproduces this run, every option spelled out (defaults included)."""
    words = ["bgeprune", "bench", model, *(["--compare", compare] if compare else []), "-o", str(out)]
    words += [w for path in options.beir for w in ("--beir", str(path))]
    words += [w for path in options.bitext for w in ("--bitext", str(path))]
    if options.speed:
        words += ["--batch-sizes", ",".join(map(str, options.batch_sizes)), "--seq-lengths",
                  ",".join(map(str, options.seq_lengths)), "--warmup", str(options.warmup), "--repeats",
                  str(options.repeats)]
    else:
        words.append("--no-speed")
    words += ["--device", options.device, "--dtype", options.dtype, "--max-length", str(options.max_length)]
    if options.backends != ["torch"] or (options.compare_backends or ["torch"]) != ["torch"]:
        words += ["--backend", ",".join(options.backends)]
        words += ["--compare-backend", ",".join(options.compare_backends)] if options.compare_backends else []
    words += (["--attn", options.attn] if options.attn else []) + ([] if options.memory else ["--no-memory"])
    words += ["--mteb", ",".join(options.mteb)] if options.mteb else []
    return shlex.join(words)


def _agreement_texts(beir: list, bitext: list) -> list[str]:
    """Texts for agreement with the base: the first data set's documents (capped), else the probe texts."""
    if beir:
        return list(beir[0].corpus.values())[:AGREEMENT_TEXTS]
    if bitext:
        return (bitext[0].english + bitext[0].other)[:AGREEMENT_TEXTS]
    return probe_texts()
