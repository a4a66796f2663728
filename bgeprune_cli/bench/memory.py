"""Peak memory of loading a model and running one batch, measured in a fresh process.

A process's peak RSS cannot be reset, so each model gets its own child process: the numbers are
then the model's alone, not whichever model ran first. On CPU it reports the peak RSS and the RSS
before loading (Python, torch, transformers), so `peak - baseline` is the model's weights plus the
activations of the batch, plus what loading imports lazily (transformers' modeling code, about
200 MB, the same for every model of a family): compare models by the ratio at real sizes. On CUDA it
reports `torch.cuda.max_memory_allocated` around the forward pass and the memory the weights hold.

Example (what `bgeprune bench` runs per model):
    python -m bgeprune_cli.bench.memory builtin:tiny-bert float32 sdpa cpu 32 128
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import psutil


def measure_in_child(spec: str, dtype: str, attn: str | None, device: str, batch: int, length: int,
                     graph: Path | None = None, directory: Path | None = None) -> dict:
    """Run this module in a child process for one model; its JSON result (or the error it printed).
    With `graph` (an ONNX file) the child loads only that graph and `directory`'s tokenizer."""
    command = [sys.executable, "-m", "bgeprune_cli.bench.memory", spec, dtype, attn or "default", device,
               str(batch), str(length)] + ([str(graph), str(directory)] if graph is not None else [])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": (proc.stderr.strip() or f"exit code {proc.returncode}").splitlines()[-1][:500]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss() -> int:
    """This process's peak RSS. Linux: VmHWM, the high-water mark of this process's own memory map;
    ru_maxrss would not do, since exec carries over the RSS of the parent that forked it."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, others KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main(spec: str, dtype_name: str, attn: str, device: str, batch: int, length: int, graph: str | None = None,
         directory: str | None = None) -> dict:
    import torch
    from transformers import AutoModel, AutoTokenizer  # noqa: F401  (their import is baseline, not model)

    from .models import BenchModel, load_bench_model
    from .speed import forward_seconds, make_batch

    if graph is not None:
        try:
            import onnxruntime  # noqa: F401  (baseline too)
        except ImportError:  # the parent loaded the graph, so only a broken install gets here
            from ..models.onnx.export import require_onnx

            require_onnx()
    baseline = psutil.Process().memory_info().rss
    if graph is not None:  # the graph alone: what serving it with onnxruntime holds
        from ..models.loading import load_tokenizer
        from ..models.onnx.runtime import OnnxEncoder
        from ..models.st_files import read_pooling

        model = BenchModel(spec, "onnx", Path(directory), None, load_tokenizer(Path(directory)),
                           read_pooling(Path(directory)), None, [], graph=OnnxEncoder(graph))
    else:
        model = load_bench_model(spec, getattr(torch, dtype_name), None if attn == "default" else attn, device)
    inputs = make_batch(model.tokenizer, batch, length, device)
    result = {"batch": batch, "length": length, "device": device, "baseline_rss_bytes": baseline}
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        weights = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward_seconds(model, inputs)
        result.update(weights_bytes=weights, peak_allocated_bytes=torch.cuda.max_memory_allocated(device))
    else:
        result["after_load_rss_bytes"] = psutil.Process().memory_info().rss
        forward_seconds(model, inputs)
    result["peak_rss_bytes"] = _peak_rss()
    result["model_rss_bytes"] = result["peak_rss_bytes"] - baseline
    return result


if __name__ == "__main__":
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    spec_, dtype_, attn_, device_, batch_, length_ = sys.argv[1:7]
    print(json.dumps(main(spec_, dtype_, attn_, device_, int(batch_), int(length_), *sys.argv[7:9])))
