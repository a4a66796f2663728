"""Speed of an encoder forward pass over a grid of batch sizes and sequence lengths.

Every batch is real tokens of exactly the requested length (no padding), so tokens/s means the
same for every model. What is timed is what serving an embedding costs: the encoder forward and
pooling, under `torch.inference_mode` (CUDA is synchronised before the clock stops); for an ONNX
backend, the graph's `last_hidden_state` and the same pooling. The models
are interleaved pass by pass in alternating order (A B, B A, ...) so drift in the machine (thermal
throttling, other load) hits all of them alike. Each point reports the median latency, p50/p90/p99,
the coefficient of variation, and sentences/s and tokens/s from the median.

Example:
    bgeprune bench out/smoke --compare builtin:tiny-xlm-roberta --batch-sizes 1,32 --seq-lengths 128
"""

from __future__ import annotations

import statistics
import time

import torch

from ..models.onnx.export import HIDDEN_OUTPUT
from .size import flops_per_token

_FILLER = ("Structured pruning removes whole attention heads, feed-forward units and layers from a "
           "transformer encoder, so the smaller model runs faster on any hardware without sparse kernels. ")


def default_grid(device: str) -> tuple[list[int], list[int]]:
    """Batch sizes and sequence lengths: small enough for a laptop CPU, wide enough for a GPU."""
    if device.startswith("cuda"):
        return [1, 32, 128], [128, 512]
    return [1, 32], [32, 128]


def make_batch(tokenizer, batch: int, length: int, device: str) -> dict[str, torch.Tensor]:
    """`batch` copies of real text tokenised to exactly `length` tokens (special tokens included)."""
    text = _FILLER * (length // 8 + 2)
    encoded = tokenizer([text] * batch, truncation=True, max_length=length, return_tensors="pt")
    if encoded["input_ids"].shape[1] != length:
        raise ValueError(f"the tokenizer made {encoded['input_ids'].shape[1]} tokens, not {length}")
    return {k: v.to(device) for k, v in encoded.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@torch.inference_mode()
def forward_seconds(bench_model, batch: dict) -> float:
    _sync(bench_model.device)
    start = time.perf_counter()
    if bench_model.graph is not None:
        states = bench_model.graph.run(batch, [HIDDEN_OUTPUT])[HIDDEN_OUTPUT]
    else:
        states = bench_model.model(**batch).last_hidden_state
    bench_model.pooling.pool(states, batch["attention_mask"])
    _sync(bench_model.device)
    return time.perf_counter() - start


def latency_stats(seconds: list[float], batch: int, length: int) -> dict:
    """Median-based throughput and latency percentiles (ms) of one model at one grid point."""
    ordered = sorted(seconds)

    def percentile(q: float) -> float:  # linear interpolation, as numpy's default
        position = (len(ordered) - 1) * q
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    median = statistics.median(ordered)
    mean = statistics.fmean(ordered)
    cv = statistics.stdev(ordered) / mean if len(ordered) > 1 and mean > 0 else 0.0
    return {"median_ms": median * 1e3, "p50_ms": percentile(0.5) * 1e3, "p90_ms": percentile(0.9) * 1e3,
            "p99_ms": percentile(0.99) * 1e3, "cv": cv, "samples": len(ordered),
            "sentences_per_s": batch / median, "tokens_per_s": batch * length / median}


def measure_grid(models: dict, batch_sizes: list[int], lengths: list[int], warmup: int, repeats: int,
                 progress=None) -> list[dict]:
    """One entry per (batch, length): per model its stats and FLOPs per token; interleaved timing."""
    points = []
    for length in lengths:
        for batch_size in batch_sizes:
            batches = {name: make_batch(m.tokenizer, batch_size, length, m.device) for name, m in models.items()}
            for name, m in models.items():
                for _ in range(warmup):
                    forward_seconds(m, batches[name])
            samples: dict[str, list[float]] = {name: [] for name in models}
            for r in range(repeats):
                for name in (list(models) if r % 2 == 0 else list(reversed(models))):
                    samples[name].append(forward_seconds(models[name], batches[name]))
                if progress is not None:
                    progress.advance(f"batch {batch_size} × {length}")
            point = {"batch": batch_size, "length": length}
            for name, m in models.items():
                point[name] = {**latency_stats(samples[name], batch_size, length),
                               "flops_per_token": flops_per_token(m.arch, m.hidden, length)}
            points.append(point)
            del batches
    return points


def add_ratios(points: list[dict], model: str = "model", base: str = "base", same_backend: dict | None = None) -> None:
    """Measured speedup, FLOPs-ratio speedup, and their quotient (the speedup efficiency), per point; each
    other entry's speedup over the base and over the base on its own backend (`same_backend`: entry -> base entry)."""
    for point in points:
        for key in point:
            if isinstance(point[key], dict) and key != base:
                point[key]["speedup_vs_base"] = point[key]["sentences_per_s"] / point[base]["sentences_per_s"]
        for key, other in (same_backend or {}).items():
            point[key]["speedup_vs_base_same_backend"] = point[key]["sentences_per_s"] / point[other]["sentences_per_s"]
        measured = point[model]["sentences_per_s"] / point[base]["sentences_per_s"]
        theoretical = point[base]["flops_per_token"] / point[model]["flops_per_token"]
        point["speedup"] = measured
        point["flops_speedup"] = theoretical
        point["speedup_efficiency"] = measured / theoretical
