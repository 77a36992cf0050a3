"""The few torch.distributed helpers training needs; a single process is world size 1 and every call is a no-op.

Launch with ``torchrun --nproc_per_node N -m vocseg train ...``: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes, if any; return ``(rank, world_size)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (e.g. early stopping) for everyone."""
    return bool(broadcast_int(int(flag), device))


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's number for everyone (e.g. a time budget's planned steps: every rank times its own steps, and
    ranks that planned different totals would leave one waiting in an all-reduce the others never join)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group together: a rank that tears gloo down while rank 0 is still writing the
    run's files can abort ("terminate called without an active exception"), so all ranks meet first."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
