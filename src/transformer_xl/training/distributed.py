"""torchrun environment, process group, DDP wrapping, rank-0 printing and metric all-reduce.

This is the only module that reads the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). Without them everything degrades to a single process and every helper is a no-op.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import TransformerXLError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False  # this process called init_process_group (and so tears it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise TransformerXLError(f"environment variable {name}={value!r} must be an integer") from None


def resolve_device(preference: str = "auto", *, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when CUDA is available, else the CPU."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise TransformerXLError(f"unknown device {preference!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TransformerXLError(f"device {preference!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: torch.device, *, timeout_s: float | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL for CUDA, gloo for CPU).

    ``timeout_s`` bounds how long a collective waits for the other processes, so that a job whose
    worker died stops with an error instead of hanging (torch's default is 30 minutes or more)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo()
    if not 0 <= rank < world_size:
        raise TransformerXLError(f"RANK={rank} out of range for WORLD_SIZE={world_size}")
    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            from datetime import timedelta

            kwargs["timeout"] = timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs)
        created = True
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, created_group=created)


def shutdown(info: DistInfo) -> None:
    if info.created_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, *, find_unused: bool) -> nn.Module:
    """DDP around the model when distributed. ``find_unused``: an adaptive softmax skips tail clusters
    that have no target in a batch, so their parameters get no gradient on that step."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def all_reduce_sum(values: Sequence[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few numbers over all processes (one collective)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flags: Tensor, info: DistInfo) -> list[bool]:
    """Which of these flags (a small float tensor on the device) any process raised: one collective,
    so that every rank takes the same branch (skip a step, stop, save)."""
    if info.enabled:
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return [value > 0 for value in flags.tolist()]


def elastic_restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this job (0 outside torchrun)."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def all_gather_tensor(tensor: Tensor, info: DistInfo) -> list[Tensor]:
    """This tensor from every rank, in rank order (all ranks must pass the same shape)."""
    if not info.enabled:
        return [tensor]
    gathered = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's value on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def print0(info: DistInfo, *args: Any, **kwargs: Any) -> None:
    """print on rank 0 only (to stderr by default, keeping stdout for results)."""
    if info.is_main:
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)
