"""LAMB: Adam's direction, scaled per parameter tensor by a trust ratio (You et al. 2019, arXiv:1904.00962).

This is the variant NVIDIA's Transformer-XL example trains WikiText-103 with (its ``lamb.py``, ``--optim
jitlamb``), so that ``optim.optimizer = "lamb"`` reproduces their recipe. For every parameter tensor ``w``
with gradient ``g``, at step ``t`` (1-based)::

    m = beta1 * m + (1 - beta1) * g                 # Adam's moments
    v = beta2 * v + (1 - beta2) * g * g
    u = m / (sqrt(v) + eps) + weight_decay * w      # Adam's step plus decoupled weight decay
    phi = min(||w||, max_weight_norm)               # the weight norm, clamped to [0, 10]
    r = phi / (||u|| + eps), or 1 where phi == 0 or ||u|| == 0
    w = w - lr * r * u

Choices, each NVIDIA's:

- **No bias correction** by default. NVIDIA follows version 3 of the paper, which drops Adam's debiasing
  (their code keeps the correction commented out). ``bias_correction=True`` divides ``m`` by ``1 - beta1^t``
  and ``v`` by ``1 - beta2^t`` first, as Adam does.
- **The weight norm is clamped to at most 10** (``max_weight_norm``; the paper leaves the scaling function
  phi open, NVIDIA and the cybertronai implementation they start from use ``min(||w||, 10)``). Large
  embedding matrices have norms far above 10, so this caps their trust ratio.
- **eps = 1e-6** is NVIDIA's default (the run configs set ``optim.eps``; the Adam default here is 1e-8). It
  is added to ``sqrt(v)`` and to ``||u||``.
- **Zero norms give a ratio of 1**: a freshly zero-initialised tensor (biases) or an all-zero update takes a
  plain Adam step instead of none (phi == 0) or a division by zero (||u|| == 0).
- **Every tensor gets the trust ratio, biases and LayerNorm included.** NVIDIA passes ``model.parameters()``
  as one group; nothing is exempt from the ratio (BERT's LAMB exempts them, NVIDIA's Transformer-XL does
  not). Weight decay, by contrast, follows the parameter groups of
  :func:`transformer_xl.training.optim.parameter_groups`: the ``no_decay`` group (biases, LayerNorm, u/v)
  has ``weight_decay`` 0 (NVIDIA's WikiText-103 recipes use no weight decay at all, so this only matters
  when a run sets ``optim.weight_decay``). A group with ``"trust_ratio": False`` takes plain Adam steps
  (ratio 1), for experiments.

The trust ratio is computed on the device without a host synchronisation (``torch.where``), and the state
(``step``, ``exp_avg``, ``exp_avg_sq``) round-trips through ``state_dict`` exactly, so a resumed run takes
bitwise the same steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["Lamb"]


class Lamb(torch.optim.Optimizer):
    """LAMB as in NVIDIA's Transformer-XL example; see the module docstring for the rule and its choices.

    Args:
        params: parameters or parameter groups (dicts; a group may set ``lr``, ``betas``, ``eps``,
            ``weight_decay``, ``bias_correction``, ``max_weight_norm`` and ``trust_ratio``).
        lr: learning rate (the training loop overwrites it every step from the schedule).
        betas: decay rates of the first and second moments.
        eps: added to ``sqrt(v)`` and to the update's norm.
        weight_decay: decoupled weight decay, added to the Adam step before the trust ratio.
        bias_correction: debias the moments as Adam does (NVIDIA: off).
        max_weight_norm: upper clamp of the weight norm in the trust ratio (NVIDIA: 10).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, *, bias_correction: bool = False,
                 max_weight_norm: float = 10.0) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Lamb: lr must be >= 0, got {lr}")
        if not eps > 0.0:
            raise ValueError(f"Lamb: eps must be > 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Lamb: betas must be in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Lamb: weight_decay must be >= 0, got {weight_decay}")
        if not max_weight_norm > 0.0:
            raise ValueError(f"Lamb: max_weight_norm must be > 0, got {max_weight_norm}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, max_weight_norm=max_weight_norm, trust_ratio=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One LAMB step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, weight_decay, lr = group["eps"], group["weight_decay"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if group["bias_correction"]:
                    step = state["step"]
                    m = exp_avg / (1.0 - beta1 ** step)
                    v = exp_avg_sq / (1.0 - beta2 ** step)
                else:
                    m, v = exp_avg, exp_avg_sq
                update = m / v.sqrt().add_(eps)
                if weight_decay != 0.0:
                    update.add_(p, alpha=weight_decay)
                if group["trust_ratio"]:
                    weight_norm = torch.linalg.vector_norm(p).clamp(max=group["max_weight_norm"])
                    update_norm = torch.linalg.vector_norm(update)
                    ratio = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / (update_norm + eps),
                                        torch.ones_like(weight_norm))
                    p.addcmul_(update, ratio, value=-lr)
                else:
                    p.add_(update, alpha=-lr)
        return loss
