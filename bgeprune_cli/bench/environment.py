"""The machine and libraries a bench report was measured on (report.json's `environment`).

Example:
    python -c "import torch; from bgeprune_cli.bench.environment import environment; \
print(environment('cpu', torch.float32, {}))"
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..artifacts import library_versions


def environment(device: str, dtype: torch.dtype, models: dict) -> dict:
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
    if graphs:  # only ONNX entries have graphs, and bench required the [onnx] extra for them
        from ..models.onnx.export import require_onnx

        require_onnx()
        import onnxruntime

        env.update(onnxruntime=onnxruntime.__version__, onnx_threads=graphs[0].threads)
    return env
