"""`bgeprune bench`: speed, memory, size and quality of a model side by side with its base.

Phases over one `BenchRun`, like train's setup → loop → write: read the quality data (bad data fails
before any model loads), load both models (size and FLOPs), measure speed (the grid, interleaved),
memory (one fresh process per model) and quality (per retrieval mode; for a trimmed vocabulary its
coverage of the quality data, bench/coverage.py), assemble the headline, then write a `bench-report`
artifact: report.json (numbers, environment, command) and report.png (quality vs throughput, kept layers).

The headline (bench/headline.py) is the grid point batch 32 × 128 tokens when the grid has it (else its
largest point): speedup (measured), FLOPs speedup (theoretical), and their ratio, the speedup efficiency.
`--backend` / `--compare-backend` run each model on several backends (PyTorch, ONNX fp32, ONNX int8;
bench/backends.py): every (model, backend) is an entry measured like the rest, and the headline is
MODEL's first backend against the base's first.

Example:
    bgeprune bench out/minilm-50pct --compare builtin:all-minilm-l6-v2 --beir ../shared/data/pydocs
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..artifacts import ensure_writable, write_artifact, write_json
from ..bench.backends import entry_key, same_backend_pairs, with_backend
from ..bench.coverage import coverage
from ..bench.environment import environment
from ..bench.eval_data import load_beir, load_bitext
from ..bench.headline import HEADLINE, QualityHeadline, entries_headline, headline_point, plot_points, quality_headline
from ..bench.memory import measure_in_child
from ..bench.models import label_of, load_bench_model
from ..bench.plot import write_report_png
from ..bench.quality import AGREEMENT_TEXTS, evaluate
from ..bench.size import ratios, size_summary
from ..bench.speed import add_ratios, default_grid, measure_grid
from ..bench.widths import check_dims
from ..command_line import comma_list, command_line
from ..device import resolve_device
from ..errors import UsageError
from ..filenames import REPORT, REPORT_PNG
from ..locks import claim_output
from ..models.probe import probe_texts
from ..ui import Progress, step


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
    dims: list[int] = field(default_factory=list)  # dense quality again at these output widths (bench/widths.py)


def _resolve(options: BenchOptions, compared: bool) -> BenchOptions:
    """The options with every default decided (device, dtype, grid, the base's backends), checked once."""
    device = str(resolve_device(options.device))
    dtype_name = options.dtype or ("float16" if device.startswith("cuda") else "float32")
    if dtype_name not in ("float32", "float16", "bfloat16"):
        raise UsageError(f"--dtype must be float32, float16 or bfloat16, not {dtype_name!r}")
    batches, lengths = default_grid(device)
    batches, lengths = options.batch_sizes or batches, options.seq_lengths or lengths
    if min(batches) < 1 or min(lengths) < 2 or options.repeats < 2 or options.warmup < 0:
        raise UsageError("batch sizes must be >= 1, sequence lengths >= 2, --repeats >= 2 and --warmup >= 0")
    if options.dims:
        check_dims(options.dims, {})
        if not options.beir and not options.bitext:
            raise UsageError("--dims scores quality at each width; give the data too (--beir DIR and/or --bitext DIR)")
    if any(b != "torch" for b in options.backends + (options.compare_backends or [])):
        if device != "cpu":
            raise UsageError(f"the ONNX backends run on onnxruntime's CPU provider; pass --device cpu (not {device})")
        from ..models.onnx.export import require_onnx

        require_onnx()  # exit 4 with the install command before any model loads
    return replace(options, device=device, dtype=dtype_name, batch_sizes=batches, seq_lengths=lengths,
                   compare_backends=(options.compare_backends or options.backends) if compared else None)


@dataclass
class BenchRun:
    """One bench run's state, filled phase by phase."""

    model: str
    compare: str | None
    out: Path
    force: bool
    options: BenchOptions
    beir: list
    bitext: list
    scratch: Path  # graphs traced at bench time (models without an onnx/ of their own) live here for the run
    models: dict = field(default_factory=dict)  # entry key ("model", "base", "model@onnx", ...) -> BenchModel
    result: dict = field(default_factory=dict)  # report.json, as it grows
    point: dict | None = None  # the speed headline's grid point
    quality: QualityHeadline | None = None

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.options.dtype)


def run(model: str, *, compare: str | None = None, out: Path | None = None, force: bool = False,
        options: BenchOptions | None = None) -> dict:
    options = _resolve(options or BenchOptions(), compared=compare is not None)
    beir = [load_beir(path) for path in options.beir]
    bitext = [s for path in options.bitext for s in load_bitext(path)]
    out = Path(out or Path("runs") / "bench" / label_of(model))
    with claim_output(out), ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bgeprune-bench-onnx-")))
        bench = BenchRun(model, compare, out, force, options, beir, bitext, scratch)
        _load(bench)
        check_dims(options.dims, {m.label: m.hidden for m in bench.models.values()})  # before any timing
        _measure_speed(bench)
        _measure_memory(bench)
        _measure_quality(bench)
        _headline(bench)
        return _write(bench)


# ---------------------------------------------------------------- load


def _load(bench: BenchRun) -> None:
    local = [Path(spec) for spec in (bench.model, bench.compare) if spec and Path(spec).expanduser().is_dir()]
    ensure_writable(bench.out, bench.force, "bench-report", local)  # never over a model it measures
    options = bench.options
    specs = [("model", bench.model, options.backends)]
    specs += [("base", bench.compare, options.compare_backends)] if bench.compare else []
    for role, spec, backends in specs:
        with step(f"loading {role} {spec}"):
            loaded = load_bench_model(spec, bench.dtype, options.attn, options.device)
        for number, backend in enumerate(backends):  # one PyTorch model describes (and may run) every entry
            bench.models[entry_key(role, backend, number == 0)] = with_backend(loaded, backend, bench.scratch)

    sizes = {role: size_summary(m) for role, m in bench.models.items()}
    bench.result.update({"command": _command(bench), "models": {
        role: {"spec": m.spec, "label": m.label, "kind": m.kind, "directory": str(m.directory),
               "backend": m.backend, "dtype": m.dtype_name, "attn_implementation": m.attn_implementation,
               **({"graph": str(m.graph.path), "graph_source": m.graph_source} if m.graph is not None else {}),
               "m3_heads": m.heads is not None, **sizes[role]} for role, m in bench.models.items()},
        "environment": environment(options.device, bench.dtype, bench.models),
        "options": {**asdict(options), "beir": list(map(str, options.beir)), "bitext": list(map(str, options.bitext))}})
    if bench.compare:
        bench.result["size_ratio"] = ratios(sizes["model"], sizes["base"])


# ---------------------------------------------------------------- measure


def _measure_speed(bench: BenchRun) -> None:
    options, points = bench.options, []
    if options.speed:
        batches, lengths = options.batch_sizes, options.seq_lengths
        with Progress("speed", len(batches) * len(lengths) * options.repeats) as progress:
            points = measure_grid(bench.models, batches, lengths, options.warmup, options.repeats, progress)
        if bench.compare:
            add_ratios(points, same_backend={k: v for k, v in same_backend_pairs(bench.models).items() if k != v})
    bench.result["speed"] = points
    bench.point = headline_point(points)


def _measure_memory(bench: BenchRun) -> None:
    if not bench.options.memory:
        return
    device, models = bench.options.device, bench.models
    batch, length = (bench.point["batch"], bench.point["length"]) if bench.point else HEADLINE
    with step(f"peak memory at batch {batch} × {length} (one fresh process per model)"):
        memory = {role: measure_in_child(m.spec, bench.options.dtype, bench.options.attn, device, batch, length,
                                         m.graph.path if m.graph is not None else None, m.directory)
                  for role, m in models.items()}
    key = "peak_allocated_bytes" if device.startswith("cuda") else "model_rss_bytes"
    if bench.compare and all(key in memory[r] for r in ("model", "base")):
        memory["ratio"] = memory["model"][key] / memory["base"][key]
        memory["ratio_of"] = key
        memory["ratios"] = {role: memory[role][key] / memory["base"][key] for role in models
                            if role != "base" and key in memory[role]}
    bench.result["memory"] = memory


def _measure_quality(bench: BenchRun) -> None:
    options = bench.options
    # A trimmed vocabulary's coverage of the quality data (None otherwise).
    bench.result["coverage"] = coverage(bench.models, bench.beir, bench.bitext)
    texts = _agreement_texts(bench.beir, bench.bitext)
    bench.result["quality"] = evaluate(bench.models, bench.beir, bench.bitext, texts, options.max_length,
                                       options.quality_batch_size, options.dims)
    bench.quality = quality_headline(bench.result["quality"])
    if options.mteb:
        from ..bench.mteb import run_mteb

        with step(f"MTEB {', '.join(options.mteb)}"):
            bench.result["mteb"] = run_mteb(bench.models, options.mteb)


# ---------------------------------------------------------------- report and write


def _headline(bench: BenchRun) -> None:
    point, quality, headline = bench.point, bench.quality, {}
    if point:
        headline = {"batch": point["batch"], "length": point["length"]}
        if bench.compare:
            headline.update({k: point[k] for k in ("speedup", "flops_speedup", "speedup_efficiency")})
    if quality and bench.compare and quality.is_quality:  # agreement alone is not a quality measure
        headline.update(quality_metric=quality.label, quality_ratio=quality.ratios("model").get(quality.metric))
    if len(bench.models) > 2 or any(m.backend != "torch" for m in bench.models.values()):
        headline["entries"] = entries_headline(bench.models, point, bench.result.get("memory", {}), quality)
    bench.result["headline"] = headline


def _write(bench: BenchRun) -> dict:
    result, point, out = bench.result, bench.point, bench.out
    inputs = [m.artifact for m in bench.models.values() if m.artifact is not None]
    points = plot_points(bench.models, point, bench.quality)
    layout = bench.models["model"].layout
    with step(f"writing {out}"), write_artifact(out, "bench-report", force=bench.force, inputs=inputs,
                                                info={"headline": result["headline"]}) as tmp:
        result["artifact"] = str(out)
        if points or layout is not None:
            x_label = (f"sentences/s at batch {point['batch']} × {point['length']} tokens "
                       f"({result['environment']['device']}, {result['environment']['dtype']})") if point else ""
            y_label = bench.quality.label if points else ""
            write_report_png(tmp / REPORT_PNG, points, x_label, y_label, layout, result["command"])
            result["report_png"] = str(out / REPORT_PNG)
        write_json(tmp / REPORT, result)
    return result


def _command(bench: BenchRun) -> str:
    """The command that reproduces this run, every option spelled out (defaults included)."""
    o = bench.options
    speed = [("--batch-sizes", comma_list(o.batch_sizes)), ("--seq-lengths", comma_list(o.seq_lengths)),
             ("--warmup", o.warmup), ("--repeats", o.repeats)] if o.speed else [("--no-speed", True)]
    other_backends = o.backends != ["torch"] or (o.compare_backends or ["torch"]) != ["torch"]
    return command_line(["bgeprune", "bench", bench.model], [
        ("--compare", bench.compare), ("-o", bench.out), ("--beir", list(o.beir)), ("--bitext", list(o.bitext)),
        *speed, ("--device", o.device), ("--dtype", o.dtype), ("--max-length", o.max_length),
        ("--backend", comma_list(o.backends) if other_backends else None),
        ("--compare-backend", comma_list(o.compare_backends) if other_backends else None),
        ("--attn", o.attn), ("--no-memory", not o.memory), ("--mteb", comma_list(o.mteb)),
        ("--dims", comma_list(o.dims))])


def _agreement_texts(beir: list, bitext: list) -> list[str]:
    """Texts for agreement with the base: the first data set's documents (capped), else the probe texts."""
    if beir:
        return list(beir[0].corpus.values())[:AGREEMENT_TEXTS]
    if bitext:
        return (bitext[0].english + bitext[0].other)[:AGREEMENT_TEXTS]
    return probe_texts()
