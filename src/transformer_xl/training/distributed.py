"""Training's distributed helpers: process group, DDP wrapping, collectives, rank-0 printing.

The torchrun variables are read by :mod:`transformer_xl.runtime` (``torchrun_env``), which also owns
:class:`DistInfo` (re-exported here with ``resolve_device``), the device choice, the elastic restart count and
the metric all-reduce that inference needs too. Without torchrun everything degrades to a single process
and every helper is a no-op.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import TransformerXLError
from ..runtime import DistInfo, resolve_device, torchrun_env

__all__ = [
    "DistInfo", "all_gather_object", "all_gather_tensor", "any_rank", "barrier", "broadcast_object",
    "init_distributed", "print0", "resolve_device", "say", "shutdown", "wrap_model",
]


def init_distributed(device: torch.device, *, timeout_s: float | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL for CUDA, gloo for CPU).

    ``timeout_s`` bounds how long a collective waits for the other processes, so that a job whose
    worker died stops with an error instead of hanging (torch's default is 30 minutes or more)."""
    rank, world_size, local_rank = torchrun_env()
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


def any_rank(flags: Tensor, info: DistInfo) -> list[bool]:
    """Which of these flags (a small float tensor on the device) any process raised: one collective,
    so that every rank takes the same branch (skip a step, stop, save)."""
    if info.enabled:
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return [value > 0 for value in flags.tolist()]


def all_reduce_max(values: Tensor, info: DistInfo) -> list[float]:
    """The largest value of each entry over all processes (one collective; unchanged in a single process)."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.tolist()


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


def say(info: DistInfo, text: str) -> None:
    """A message of the run on rank 0 (stderr, as the progress bar), with a timestamp when stderr is not a
    terminal (a job log, nohup), so that a log says when each thing happened."""
    if not info.is_main:
        return
    stamp = "" if sys.stderr.isatty() else time.strftime("%Y-%m-%d %H:%M:%S ")
    print(stamp + text, file=sys.stderr, flush=True)
