"""torch.distributed helpers of the trainer (launch with ``torchrun``).

The trainer runs data-parallel when started by ``torchrun`` /
``python -m torch.distributed.run`` (``WORLD_SIZE`` > 1 in the environment):
the process group is initialised from the environment variables (``env://``),
NCCL on CUDA and gloo on the CPU, and the student is wrapped in
``torch.nn.parallel.DistributedDataParallel``. Only rank 0 logs and
writes files.

Example:
    torchrun --nproc_per_node=4 -m dife.cli train paper_human_dog.yaml
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dife.errors import InputError

__all__ = ["DistContext", "launched_distributed", "setup", "cleanup", "broadcast_float", "gather_objects", "barrier"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands.

    Attributes:
        rank: Global rank (0 when not distributed).
        world_size: Number of processes (1 when not distributed).
        local_rank: Rank on this machine (selects the GPU).
        initialized_here: Whether [setup][dife.train.distributed.setup] created the process group
            (so [cleanup][dife.train.distributed.cleanup] destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 (logs and writes files)."""
        return self.rank == 0


def launched_distributed() -> bool:
    """True when the environment describes a multi-process run (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"distributed run without {name} in the environment; launch with torchrun")
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device_type: str) -> DistContext:
    """Join the process group described by the environment, if any.

    Args:
        device_type: ``"cuda"`` (NCCL backend, one GPU per local rank) or ``"cpu"`` (gloo).

    Returns:
        The [DistContext][dife.train.distributed.DistContext] (rank 0 of 1 without ``torchrun``).
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    if not launched_distributed():
        return DistContext()
    if not dist.is_available():
        raise InputError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local, True)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if [setup][dife.train.distributed.setup] created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op when not distributed)."""
    if ctx.distributed:
        dist.barrier()


def broadcast_float(value: float | None, ctx: DistContext, device: torch.device) -> float | None:
    """Rank 0's ``value`` on every rank (``None`` travels as NaN)."""
    if not ctx.distributed:
        return value
    t = torch.tensor([float("nan") if value is None else float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    v = float(t.item())
    return None if v != v else v


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
