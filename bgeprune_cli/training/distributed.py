"""Multi-process training: one process per GPU under `accelerate launch` or `torchrun`, through accelerate.

A step's batch (`train.batch_size` texts) is cut into micro-batches of `train.micro_batch_size`
(the unit one forward pass sees, and the group the in-batch losses compare within). The
micro-batches are dealt out to the ranks in contiguous blocks and each rank accumulates its block
before DDP averages the gradients, so a step computes the same mean loss on 1, 2 or 8 processes
(up to float summation order). That is what lets a checkpoint written under one world size resume
under another.

Kept identical on every rank, and why:
- weights, gates and the optimizer states: DDP broadcasts rank 0's weights when it wraps the model,
  then every rank applies the same all-reduced gradients;
- the gate noise: every rank draws it from the same seeded generator, once per step;
- λ: its gradient is the constraint gap, which depends only on the (identical) gates, so it is not
  all-reduced at all;
- the data position: every rank advances the same global stream and reads only its own share.
`check_in_sync` verifies this at every checkpoint (a checksum gathered from all ranks), so a
divergence is an error at once, not a silently wrong run.

Example:
    torchrun --nproc_per_node 8 -m bgeprune_cli train recipes/50pct-8gpu.toml
    accelerate launch --multi_gpu --num_processes 8 -m bgeprune_cli train recipes/50pct-8gpu.toml
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable

import torch

from ..errors import BgepruneError, UsageError


class RanksOutOfSync(BgepruneError):
    """Ranks hold different gates, λ or weights: a bug or a hardware fault, never a result to keep."""

    exit_code = 1


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun / accelerate launch (1 for a plain `bgeprune train`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_secondary_process() -> bool:
    """True on every rank but 0 of a launched run: those ranks print nothing."""
    return int(os.environ.get("RANK", "0")) != 0


class Dist:
    """The launched process group (accelerate) or a single process; the same calls work for both."""

    def __init__(self, device: torch.device | None):
        self.world = launched_world_size()
        self.rank = 0
        self.accelerator = None
        self.device = device
        if self.world == 1:
            return
        from accelerate import Accelerator, DistributedDataParallelKwargs

        use_cpu = device is not None and device.type == "cpu" or not torch.cuda.is_available()
        # find_unused_parameters: the pooler, and in recovery the gates, get no gradient.
        # mixed_precision="no": the trainer applies its own bf16 autocast on CUDA, the same with one process.
        self.accelerator = Accelerator(cpu=use_cpu, mixed_precision="no", kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)])
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        if device is not None and device.type == "cuda" and device.index is not None and self.world > 1:
            raise UsageError(f"--device {device}: under torchrun / accelerate launch each process takes its GPU "
                             f"from LOCAL_RANK; pass --device cuda (or nothing).")
        self.device = self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_block(self, micro_batches: int) -> range:
        """Which of a step's micro-batches this rank computes (a contiguous block)."""
        if micro_batches % self.world:
            raise UsageError(
                f"a step has {micro_batches} micro-batches (train.batch_size / train.micro_batch_size), which "
                f"{self.world} processes cannot share equally; make it a multiple of {self.world}, e.g. "
                f"--set train.micro_batch_size=<batch_size / {self.world}> or a larger train.batch_size.")
        per = micro_batches // self.world
        return range(self.rank * per, (self.rank + 1) * per)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP around the module whose parameters get data-dependent gradients (a no-op in one process)."""
        return module if self.accelerator is None else self.accelerator.prepare_model(module)

    def no_sync(self, module: torch.nn.Module, skip: bool):
        """Accumulate without all-reducing (every micro-batch but a rank's last)."""
        return self.accelerator.no_sync(module) if skip and self.accelerator is not None else nullcontext()

    def reduce(self, values: torch.Tensor, reduction: str) -> torch.Tensor:
        """`values` summed ("sum") or averaged ("mean") over ranks; the same result on every rank."""
        if self.accelerator is None:
            return values
        return self.accelerator.reduce(values.to(self.device), reduction=reduction).cpu()

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def check_in_sync(self, tensors: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Raise if any rank's tensors differ from rank 0's (compared through float64 checksums).

        `tensors` is only called with more than one rank: one process has nothing to compare.
        """
        if self.accelerator is None:
            return
        named = tensors()
        sums = torch.stack([t.detach().double().sum() + (t.detach().double() ** 2).sum() for t in named.values()])
        gathered = self.accelerator.gather(sums.to(self.device)).cpu().view(self.world, -1)
        differ = [name for i, name in enumerate(named) if not (gathered[:, i] == gathered[0, i]).all()]
        if differ:
            raise RanksOutOfSync(f"ranks hold different {', '.join(differ)}; the run cannot continue as one model. "
                                 f"Resume from the last checkpoint (--resume); if it happens again, report it.")

    def close(self) -> None:
        """Tear the process group down cleanly so the launcher sees a normal exit."""
        if self.accelerator is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
