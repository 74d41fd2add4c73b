"""torch.distributed helpers for sharded evaluation.

Launch with an existing engine, ``torchrun``; nothing here starts processes::

    # one machine, 4 GPUs (NCCL) or 4 CPU processes (gloo)
    torchrun --nproc-per-node 4 -m robustkit eval --model ... --out DIR
    # two machines: run on each, with the same rendezvous endpoint
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        --rdzv-id eval1 -m robustkit eval --model ... --out DIR

The data are split into global batches; rank ``r`` of ``W`` runs the batches whose index ``b`` has
``b % W == r``. A batch is therefore the same set of images with the same attack seed whatever the number
of processes, which is what makes the merged result identical to a single-process run.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> Tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torch.distributed."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: Optional[str] = None) -> Optional[torch.device]:
    """Joins the process group that ``torchrun`` describes in the environment (``WORLD_SIZE > 1``).

    NCCL when ``device`` is a CUDA device (each rank then takes ``cuda:LOCAL_RANK``), gloo otherwise.
    Returns the device this rank should use (``device`` unchanged outside torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = device is not None and torch.device(device).type == "cuda"
    local_device = torch.device(device) if device is not None else None
    if wants_cuda and world > 1:
        local_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local_device)
    if world > 1 and not is_distributed():
        kwargs = {"device_id": local_device} if wants_cuda else {}
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo", **kwargs)
    return local_device


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (``obj`` itself outside torch.distributed)."""
    if not is_distributed():
        return obj
    box: List[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank_failed(failed: bool) -> bool:
    """True on every rank when any rank reports ``failed`` (so that all of them stop together)."""
    if not is_distributed():
        return failed
    flags: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(flags, failed)
    return any(flags)


def shard(batch_ids: Sequence[int], rank: int, world: int) -> List[int]:
    """The batches rank ``rank`` of ``world`` runs: those with ``b % world == rank``."""
    return [b for b in batch_ids if b % world == rank]


__all__ = ["is_distributed", "rank_and_world", "init_from_env", "shutdown", "barrier", "broadcast_object",
           "any_rank_failed", "shard"]
