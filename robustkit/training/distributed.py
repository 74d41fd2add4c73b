"""Data parallelism for :func:`robustkit.training.fit` under ``torchrun``.

``torchrun --nproc-per-node N script.py`` starts N processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a
rendezvous address in their environment. :func:`distributed_context` joins them into a process group (gloo for
CPU tensors, nccl for CUDA ones) unless the caller already did, and leaves it again on exit if it created it.
Each rank trains on its own shard (a ``DistributedSampler``); ``DistributedDataParallel`` averages the weight
gradients, so N ranks with local batches of B / N take the same steps as one process with batch B.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@contextlib.contextmanager
def distributed_context(device: torch.device) -> Iterator[DistributedInfo]:
    """The rank, world size and local rank of this process; a process group exists inside the context
    whenever the world has more than one process."""
    created = False
    if not dist.is_available() or (not dist.is_initialized() and not launched_by_torchrun()):
        yield DistributedInfo()
        return
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        created = True
    try:
        yield DistributedInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    finally:
        if created:
            dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, info: DistributedInfo) -> torch.Tensor:
    """The elementwise sum of ``values`` over all ranks (``values`` itself in a single process)."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_flag(flag: bool, info: DistributedInfo, device: torch.device) -> bool:
    """Rank 0's value of ``flag`` on every rank (e.g. the overfitting guard's stop decision)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def barrier(info: DistributedInfo) -> None:
    if info.enabled:
        dist.barrier()


__all__ = ["DistributedInfo", "distributed_context", "launched_by_torchrun", "all_reduce_sum", "broadcast_flag",
           "barrier"]
