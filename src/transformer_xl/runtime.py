"""What running a model needs besides the model: the device, the process's rank, a checkpoint, the span.

Inference (evaluation, scoring, generation, analysis and their commands) and training both use this
module; it never imports training. It is the only module that reads the torchrun environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, TORCHELASTIC_RESTART_COUNT).

- :func:`resolve_device` turns "auto", "cpu", "cuda:1" into a device.
- :func:`resolve_checkpoint` finds the checkpoint a path names (a checkpoint, or a run's best/ or last/).
- :func:`load_checkpoint` loads (model, vocabulary, run config) from it, with the device's kernels applied.
- :func:`resolve_span` is the one place that decides the span a command runs a checkpoint with.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Sequence

import torch

from .config import EvalConfig, ModelConfig, RunConfig, Span, TransformerXLError
from .model import TransformerXLLM
from .pretrained import old_checkpoint_path, resolve_checkpoint

__all__ = [
    "DistInfo", "LoadedCheckpoint", "RUN_CONFIG_FILE", "all_reduce_sum", "autocast", "elastic_restart_count",
    "available_cpus", "default_threads", "load_checkpoint", "load_run_config", "old_checkpoint_path",
    "resolve_checkpoint", "resolve_device", "resolve_span", "set_threads", "torchrun_env",
]

RUN_CONFIG_FILE = "run.json"
PRECISIONS = ("fp32", "bf16", "fp16")


# Processes and devices -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 outside torchrun)."""

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


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) without them."""
    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)


def elastic_restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this job (0 outside torchrun)."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def resolve_device(preference: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """``auto``: this process's GPU when CUDA is available, else the CPU. ``cuda`` without an index is
    this process's GPU (LOCAL_RANK under torchrun)."""
    if local_rank is None:
        local_rank = torchrun_env()[2]
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


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cgroup cpusets), not all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Torch CPU threads for this process: its CPUs, shared evenly by the processes torchrun started on
    this machine (LOCAL_WORLD_SIZE)."""
    return max(1, available_cpus() // max(1, _env_int("LOCAL_WORLD_SIZE", 1)))


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count: ``threads``, or :func:`default_threads` for None or 0. Returns it."""
    if threads is not None and threads < 0:
        raise TransformerXLError(f"--threads must be a positive number of threads, got {threads}")
    count = threads or default_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def autocast(device: torch.device, precision: str) -> ContextManager[Any]:
    """The autocast context of a precision: fp32 (none), bf16 (CPU or CUDA), fp16 (CUDA only)."""
    if precision not in PRECISIONS:
        raise TransformerXLError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise TransformerXLError("fp16 needs a CUDA device; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def all_reduce_sum(values: Sequence[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few numbers over all processes (one collective; a no-op in a single process)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    if info.enabled:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.tolist()


# Checkpoints ---------------------------------------------------------------------------------------
def load_run_config(directory: str | Path) -> RunConfig | None:
    """The run config saved with a training checkpoint; None for a bare save_pretrained directory."""
    from .pretrained import read_json

    path = Path(directory) / RUN_CONFIG_FILE
    if not path.exists():
        return None
    try:
        return RunConfig.from_dict(read_json(path, what="run config"))
    except TransformerXLError as exc:
        raise TransformerXLError(f"{path}: {exc}") from None


@dataclass
class LoadedCheckpoint:
    """A model ready to run, and what was saved with it."""

    model: TransformerXLLM  # eval mode, on the device, device kernels applied
    vocab: Any  # transformer_xl.data.Vocabulary, or None when none was saved
    run_config: RunConfig | None  # None for a bare save_pretrained directory
    path: Path  # the checkpoint directory itself

    @property
    def saved_eval(self) -> EvalConfig | None:
        return None if self.run_config is None else self.run_config.eval


def load_checkpoint(path: str | Path, *, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """The model, vocabulary and run config of a checkpoint or run directory, ready for inference."""
    from .kernels import apply_device_kernels
    from .pretrained import load_pretrained, load_vocabulary

    directory = resolve_checkpoint(path)
    model = load_pretrained(directory, map_location=device)
    apply_device_kernels(model, device)
    return LoadedCheckpoint(model=model, vocab=load_vocabulary(directory), run_config=load_run_config(directory),
                            path=directory)


# The span --------------------------------------------------------------------------------------------
def resolve_span(model_config: ModelConfig, saved: EvalConfig | None = None, *, seg_len: int | None = None,
                 mem_len: int | None = None, clamp_len: int | None = None,
                 same_length: bool | None = None) -> Span:
    """The span every command runs a checkpoint with, field by field, first found wins:

    1. the value given on the command line (or in the call);
    2. the checkpoint's saved evaluation settings (run.json ``[eval]``; ``txl train --preset`` fills them
       with the preset's published evaluation span, e.g. wt103-base 64 / 640 / clamp 400 / same_length);
    3. the model's training span (config.json).

    ``txl eval``, ``score``, ``generate``, ``recl`` and ``analyze`` all call this, so one checkpoint is run
    the same way by each of them. A bad value is a ConfigError naming the field.
    """
    span = model_config.train_span
    if saved is not None:
        span = span.replace(seg_len=saved.seg_len, mem_len=saved.mem_len, clamp_len=saved.clamp_len,
                            same_length=saved.same_length)
    return span.replace(seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len, same_length=same_length)
