"""The optimiser: Adam, AdamW, LAMB or Muon over two parameter groups, one with weight decay and one without
(Muon: three, the decoder layers' weight matrices in a group of their own).

Weight decay pulls matrices and embeddings toward zero. It does not belong on parameters that set an
offset or a scale: every bias (the Linear biases, the adaptive softmax's ``cluster_bias`` and output
biases, the global or per-layer u and v of the relative attention, ``r_w_bias`` and ``r_r_bias``, and
Shaw's per-distance ``r_bias``) and the LayerNorm weights and biases. Those go into the ``no_decay`` group
(weight decay 0); everything else, embeddings, projections and weight matrices, into ``decay``.

With ``optim.optimizer = "muon"`` the ``decay`` group is split: the weight matrices of the ``nn.Linear``
layers inside the decoder layers (attention projections, the positional projection, the feed-forward) form
the ``muon`` group, which :class:`~transformer_xl.training.muon.Muon` orthogonalises; the embeddings and the
softmax stay with AdamW, as in Muon's own recipes (its update suits hidden matrices, not a table of rows).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import OptimConfig
from .lamb import Lamb
from .muon import Muon

__all__ = ["build_optimizer", "parameter_groups"]

NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (nn.LayerNorm,)


def _decays(module: nn.Module, name: str) -> bool:
    """Whether the parameter ``name`` of ``module`` (its own, not a child's) takes weight decay."""
    return not (isinstance(module, NO_DECAY_MODULES) or name.endswith("bias"))


def _hidden_matrix(prefix: str, module: nn.Module, name: str) -> bool:
    """Whether the parameter is the weight matrix of a linear layer inside a decoder layer (``layers.N``;
    under DDP or compile the prefix has more in front)."""
    return isinstance(module, nn.Linear) and name == "weight" and ".layers." in f".{prefix}."


def parameter_groups(model: nn.Module, weight_decay: float, muon: bool = False) -> list[dict[str, Any]]:
    """Param groups for a torch optimiser: ``decay`` (with ``weight_decay``) then ``no_decay`` (without);
    with ``muon``, first a ``muon`` group (``"muon": True``, with ``weight_decay``) of the decoder layers'
    weight matrices (the others take :class:`Muon`'s default rule, which ``build_optimizer`` sets to AdamW).

    Each group carries the names of its parameters (``"names"``, kept in the optimiser's state dict). A
    parameter shared by several modules (tied weights) appears once, under the name ``named_parameters``
    gives it. Parameters that need no gradient are left out; so is a group left empty.
    """
    groups = {"muon": {"group": "muon", "names": [], "params": [], "weight_decay": weight_decay, "muon": True},
              True: {"group": "decay", "names": [], "params": [], "weight_decay": weight_decay},
              False: {"group": "no_decay", "names": [], "params": [], "weight_decay": 0.0}}
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group = groups["muon" if muon and _hidden_matrix(prefix, module, name) else _decays(module, name)]
            group["names"].append(f"{prefix}.{name}" if prefix else name)
            group["params"].append(param)
    return [group for group in groups.values() if group["params"]]


def build_optimizer(model: nn.Module, optim: OptimConfig, precision: str = "fp32") -> torch.optim.Optimizer:
    """Adam (weight decay as L2 on the gradient), AdamW (decoupled decay), LAMB (:class:`Lamb`, NVIDIA's
    variant: decoupled decay, a per-tensor trust ratio) or Muon (:class:`Muon`: the decoder layers' matrices
    orthogonalised, AdamW for the rest) over :func:`parameter_groups`.

    The learning rate is set before every step from :func:`transformer_xl.training.schedule.learning_rate`.
    ``precision`` is the run's (train.precision): in bf16, Muon's Newton-Schulz iterations run in bf16 too.
    """
    groups = parameter_groups(model, optim.weight_decay, muon=optim.optimizer == "muon")
    betas = (optim.beta1, optim.beta2)
    if optim.optimizer == "muon":
        return Muon(groups, lr=optim.lr, momentum=optim.momentum, betas=betas, eps=optim.eps, muon=False,
                    ns_dtype="bfloat16" if precision == "bf16" else "float32")
    if optim.optimizer == "lamb":
        return Lamb(groups, lr=optim.lr, betas=betas, eps=optim.eps)
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=optim.lr, betas=betas, eps=optim.eps)
