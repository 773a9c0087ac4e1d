"""Muon for the decoder layers' weight matrices, AdamW for every other parameter, in one optimiser.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; at scale: Liu et al. 2025, "Muon is
scalable for LLM training", arXiv:2502.16982) keeps a momentum of the gradient of a weight matrix and steps
along that momentum made (approximately) orthogonal: the same direction with all its singular values pushed
to ~1, so rare directions in the update move as far as the dominant ones. For a matrix ``W`` (A x B) with
gradient ``G`` at a step::

    M = momentum * M + G                               # the momentum buffer
    D = G + momentum * M   (nesterov)  or  M           # the direction
    O = newton_schulz(D)                               # ~ U V^T of D's SVD, singular values in ~[0.7, 1.2]
    W = W * (1 - lr * weight_decay)                    # decoupled weight decay
    W = W - lr * 0.2 * sqrt(max(A, B)) * O

The factor ``0.2 * sqrt(max(A, B))`` is Liu et al.'s: it gives the update the root-mean-square size of a
typical AdamW update, so ``optim.lr`` and ``optim.weight_decay`` tuned for AdamW carry over. Parameters that
are not hidden matrices (embeddings and the softmax, biases, layer norms, u and v) take AdamW steps with the
same ``lr``; groups say which rule they take with ``"muon": True`` or ``False``.

``newton_schulz`` runs five iterations of the quintic ``X <- a X + (b A + c A A) X`` with ``A = X X^T`` on
``D / ||D||_F`` (on the wide orientation, so ``A`` is the smaller Gram matrix), coefficients ``(a, b, c) =
(3.4445, -4.7750, 2.0315)`` (Jordan's, chosen so that small singular values grow fast). Matrices of one
shape are stacked and iterated as one batch. ``ns_dtype`` sets the precision of the iteration: "bfloat16",
as the reference implementation and ``torch.optim.Muon`` run it, halves its cost on CPUs with bf16 units
and ``build_optimizer`` chooses it for runs in bf16 precision; "float32" otherwise. The tests compare both
with ``torch.optim.Muon``: the steps agree to bf16's precision.

The state (``momentum_buffer``, or AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``) round-trips through
``state_dict`` exactly, so a resumed run takes bitwise the same steps.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Muon", "newton_schulz"]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# by name, so that the groups in a saved state dict hold plain values
NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def newton_schulz(d: Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.float32) -> Tensor:
    """An approximately orthogonal matrix with the singular vectors of ``d`` (A, B) or of each of a batch
    (N, A, B); returned in ``d``'s dtype."""
    a, b, c = NS_COEFFICIENTS
    x = d.to(dtype)
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(0)
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:
        x = x.mT
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        # fused multiply-adds: in bf16 each rounds once, where separate products and sums would round twice
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if not wide:
        x = x.mT
    return (x if batched else x.squeeze(0)).to(d.dtype)


class Muon(torch.optim.Optimizer):
    """Muon on the groups with ``"muon": True`` (2-D parameters only), AdamW on the others; see the module
    docstring for the rules.

    Args:
        params: parameters or parameter groups (dicts; a group may set any of the arguments below).
        lr: learning rate (the training loop overwrites it every step from the schedule).
        momentum: Muon's momentum.
        nesterov: step along ``G + momentum * M`` instead of ``M``.
        ns_steps: Newton-Schulz iterations.
        ns_dtype: precision of the iterations, "float32" or "bfloat16".
        betas, eps: AdamW's, for the groups without Muon.
        weight_decay: decoupled weight decay (both rules).
        muon: the rule of groups that do not say.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 ns_dtype: str = "float32", betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, muon: bool = True) -> None:
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {tuple(NS_DTYPES)}, got {ns_dtype!r}")
        if lr <= 0 or not 0 <= momentum < 1 or ns_steps < 1 or weight_decay < 0:
            raise ValueError(f"invalid Muon settings: lr {lr}, momentum {momentum}, ns_steps {ns_steps}, "
                             f"weight_decay {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, ns_dtype=ns_dtype,
                        betas=betas, eps=eps, weight_decay=weight_decay, muon=muon)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon orthogonalises matrices: a group with muon=True holds a parameter "
                                 f"that is not 2-D ({[tuple(p.shape) for p in group['params'] if p.dim() != 2]})")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        by_shape: dict[tuple[torch.Size, torch.dtype, torch.device], list[tuple[Tensor, Tensor]]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            direction = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
            by_shape[(p.shape, p.dtype, p.device)].append((p, direction))
        for (shape, _, _), items in by_shape.items():
            # one batched iteration for the matrices of a shape (the layers repeat theirs)
            ortho = newton_schulz(torch.stack([d for _, d in items]), group["ns_steps"],
                                  dtype=NS_DTYPES[group["ns_dtype"]])
            scale = lr * 0.2 * math.sqrt(max(shape))
            for (p, _), o in zip(items, ortho.unbind(0)):
                p.mul_(1 - lr * wd)
                p.add_(o, alpha=-scale)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad, state = p.grad, self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = state["step"].item()
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            p.mul_(1 - lr * wd)
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** t))
