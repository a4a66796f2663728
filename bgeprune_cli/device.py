"""The torch device a command runs on: `--device cpu|cuda|cuda:N`, or CUDA when torch sees a GPU.

One resolver for every command (train, bench), so the same value means the same thing everywhere
and a request for a GPU that is not there is an environment error (exit 4), not a crash.

Example:
    bgeprune bench out/smoke --device cpu
"""

from __future__ import annotations

import re

import torch

from .errors import EnvironmentProblem, UsageError


def resolve_device(requested: str | None) -> torch.device:
    """`requested` as a torch device; None picks CUDA when available, else the CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", requested):
        raise UsageError(f"--device {requested!r} is not a torch device (cpu, cuda, cuda:1, ...).")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem(f"--device {requested}: no CUDA GPU is visible to torch here; use --device cpu.")
    return torch.device(requested)
