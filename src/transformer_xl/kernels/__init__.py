"""Device kernels, applied to a plain ``torch.nn`` model from outside (the model never chooses them).

The model in ``transformer_xl.model`` uses ``nn.Linear``, ``nn.Dropout`` and ``F.linear`` only. For a
model that runs on the CPU, :func:`apply_device_kernels` swaps in paths measured faster there
(benchmarks/RESULTS.md): oneDNN's fp32 matmul for every dense product (with its own backward), and a
dropout that draws its mask from 16-bit lanes of 64-bit random words. Parameters, state dict and
results (up to fp32 rounding; the dropout keeps an element with probability round(p * 65536) / 65536)
are unchanged; the equivalence tests in tests/kernels cover both. Training and inference call it for
the device they chose; on any other device it leaves the model as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import CheapDropout
from .linear import FastLinear
from .linear import linear as fast_linear

__all__ = ["CPU_MATMULS", "apply_device_kernels", "remove_device_kernels"]

CPU_MATMULS = ("onednn", "mkl")


def apply_device_kernels(model: nn.Module, device: torch.device | str, *, cpu_matmul: str = "onednn",
                         cheap_dropout: bool = True) -> nn.Module:
    """Install the fast paths of ``device`` in ``model`` (in place; returned for chaining). Idempotent.

    ``cpu_matmul="mkl"`` keeps torch's own dense products (MKL), ``cheap_dropout=False`` torch's dropout.
    """
    if cpu_matmul not in CPU_MATMULS:
        raise ValueError(f"cpu_matmul must be one of {CPU_MATMULS}, got {cpu_matmul!r}")
    remove_device_kernels(model)
    if torch.device(device).type != "cpu":
        return model
    for module in model.modules():
        if cpu_matmul == "onednn":
            if type(module) is nn.Linear:
                module.__class__ = FastLinear
            if "dense" in module.__dict__:
                module.dense = fast_linear
        if cheap_dropout and type(module) is nn.Dropout:
            module.__class__ = CheapDropout
    return model


def remove_device_kernels(model: nn.Module) -> nn.Module:
    """Back to plain ``torch.nn`` (e.g. before moving a model to another device)."""
    for module in model.modules():
        if type(module) is FastLinear:
            module.__class__ = nn.Linear
        elif type(module) is CheapDropout:
            module.__class__ = nn.Dropout
        if "dense" in module.__dict__:
            module.dense = F.linear
    return model
