"""Dense layers that reach the faster fp32 matrix multiply on CPU.

torch's CPU ``linear`` in float32 goes to MKL's sgemm. On some processors (measured on the AMD EPYC
machines this project is developed on, benchmarks/RESULTS.md) oneDNN's fp32 matmul is about twice as
fast, still in plain IEEE fp32 (not the bf16/tf32 "fast math" modes). torch exposes it as
``torch.ops.mkldnn._linear_pointwise``, forward only; :class:`_OneDNNLinear` adds the backward
(dX = dY W, dW = dY^T X, both through the same kernel). Everything else (CUDA, bf16/fp16, autocast,
no oneDNN build) uses ``F.linear``. :func:`transformer_xl.kernels.apply_device_kernels` puts it in
a model; the model itself is plain ``torch.nn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_HAVE_ONEDNN = _onednn_available()


def _mm_t(a: Tensor, b: Tensor) -> Tensor:
    """a @ b^T through oneDNN: a (N, in) or (..., in), b (out, in) -> (N, out)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        out = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # (..., out), not a view
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        flat = x.reshape(-1, x.shape[-1])  # (N, in)
        g = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _mm_t(g, weight.t()).view(*grad.shape[:-1], weight.shape[1])  # (N, out) @ (out, in)
        if ctx.needs_input_grad[1]:
            grad_w = _mm_t(g.t(), flat.t())  # (out, N) @ (N, in) -> (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


# Below this many multiply-adds a call's fixed cost outweighs oneDNN's faster kernel (measured: a
# 256x64x192 product is faster through MKL, 2048x256x256 through oneDNN).
_MIN_MACS = 1 << 24


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` with the oneDNN fp32 path on CPU (same result up to fp32 rounding)."""
    if (_HAVE_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and x.numel() * weight.shape[0] >= _MIN_MACS):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class FastLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose forward uses :func:`linear`; installed by
    swapping the class of an existing ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
