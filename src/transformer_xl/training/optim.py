"""The optimiser: Adam, AdamW or LAMB over two parameter groups, one with weight decay and one without.

Weight decay pulls matrices and embeddings toward zero. It does not belong on parameters that set an
offset or a scale: every bias (the Linear biases, the adaptive softmax's ``cluster_bias`` and output
biases, the global or per-layer u and v of the relative attention, ``r_w_bias`` and ``r_r_bias``, and
Shaw's per-distance ``r_bias``) and the LayerNorm weights and biases. Those go into the ``no_decay`` group
(weight decay 0); everything else, embeddings, projections and weight matrices, into ``decay``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import OptimConfig
from .lamb import Lamb

__all__ = ["build_optimizer", "parameter_groups"]

NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (nn.LayerNorm,)


def _decays(module: nn.Module, name: str) -> bool:
    """Whether the parameter ``name`` of ``module`` (its own, not a child's) takes weight decay."""
    return not (isinstance(module, NO_DECAY_MODULES) or name.endswith("bias"))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Param groups for a torch optimiser: ``decay`` (with ``weight_decay``) then ``no_decay`` (without).

    Each group carries the names of its parameters (``"names"``, kept in the optimiser's state dict). A
    parameter shared by several modules (tied weights) appears once, under the name ``named_parameters``
    gives it. Parameters that need no gradient are left out; so is a group left empty.
    """
    groups = {True: {"group": "decay", "names": [], "params": [], "weight_decay": weight_decay},
              False: {"group": "no_decay", "names": [], "params": [], "weight_decay": 0.0}}
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group = groups[_decays(module, name)]
            group["names"].append(f"{prefix}.{name}" if prefix else name)
            group["params"].append(param)
    return [group for group in groups.values() if group["params"]]


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam (weight decay as L2 on the gradient), AdamW (decoupled decay) or LAMB (:class:`Lamb`, NVIDIA's
    variant: decoupled decay, a per-tensor trust ratio) over :func:`parameter_groups`.

    The learning rate is set before every step from :func:`transformer_xl.training.schedule.learning_rate`.
    """
    groups = parameter_groups(model, optim.weight_decay)
    betas = (optim.beta1, optim.beta2)
    if optim.optimizer == "lamb":
        return Lamb(groups, lr=optim.lr, betas=betas, eps=optim.eps)
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=optim.lr, betas=betas, eps=optim.eps)
