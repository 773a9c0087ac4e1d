"""Projected adaptive log-softmax (Grave et al. 2017, with the original release's projections).

The vocabulary is split by ``cutoffs`` into a head (the most frequent tokens plus one logit per tail
cluster) and tail clusters. log p(w) = log p_head(w) for head tokens, and
log p_head(cluster i) + log p_tail_i(w) for tokens of tail cluster i.

Cluster logits: row ``i - 1`` of ``cluster_weight`` / ``cluster_bias`` belongs to tail cluster ``i``
(natural order, as Hugging Face's port and the original TensorFlow code). The original PyTorch release
and NVIDIA's version read them in reverse (head column ``-i``); their importer in ``interop/original.py``
flips the rows, so weights keep their meaning across implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .embedding import cluster_bounds, cluster_dims


def _full_precision(logits: Tensor) -> Tensor:
    """Log-softmax in at least float32 (autocast may hand us bf16/fp16 logits); float64 stays float64."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class ProjectedAdaptiveLogSoftmax(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_token = config.n_token
        self.d_proj = config.d_model
        self.bounds = cluster_bounds(config)
        self.shortlist = self.bounds[0][1]
        self.n_clusters = config.n_clusters
        if self.n_clusters > 0:
            self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, config.d_embed))
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))
        self.out_layers = nn.ModuleList()
        self.out_projs = nn.ParameterList()
        dims = cluster_dims(config)
        if config.div_val == 1:
            # One output layer over the whole vocabulary, sliced per cluster; one projection per cluster
            # (identity when d_embed == d_model, registered as None like the original).
            self.out_layers.append(nn.Linear(config.d_embed, config.n_token))
            for _ in self.bounds:
                self.out_projs.append(
                    nn.Parameter(torch.empty(config.d_model, config.d_embed))
                    if config.d_embed != config.d_model else None)
        else:
            for (start, end), dim in zip(self.bounds, dims):
                self.out_layers.append(nn.Linear(dim, end - start))
                self.out_projs.append(nn.Parameter(torch.empty(config.d_model, dim)))
        self.dense = F.linear  # the output products; device kernels may replace it on an instance

    # ----------------------------------------------------------------------------------------------
    def _cluster_params(self, i: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Weight (V_i, d_i), bias (V_i,) and projection (C, d_i) or None of cluster i (0 = head)."""
        if len(self.out_layers) == 1:
            start, end = self.bounds[i]
            weight, bias = self.out_layers[0].weight, self.out_layers[0].bias
            if (start, end) != (0, self.n_token):  # a slice's backward copies into a new (V, d) gradient
                weight, bias = weight[start:end], bias[start:end]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        if i == 0 and self.n_clusters > 0:
            weight = torch.cat([weight, self.cluster_weight], dim=0)  # (shortlist + n_clusters, d_0)
            bias = torch.cat([bias, self.cluster_bias], dim=0)
        return weight, bias, self.out_projs[i]

    def _logits(self, hidden: Tensor, weight: Tensor, bias: Tensor, proj: Tensor | None) -> Tensor:
        if proj is not None:
            hidden = self.dense(hidden, proj.t())  # (N, C) @ (C, d_i) -> (N, d_i)
        return self.dense(hidden, weight, bias)  # (N, V_i)

    def _head_log_probs(self, hidden: Tensor) -> Tensor:
        return F.log_softmax(_full_precision(self._logits(hidden, *self._cluster_params(0))), dim=-1)

    # ----------------------------------------------------------------------------------------------
    def forward(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Negative log-likelihood of each target, in input order: hidden (N, C), targets (N,) -> (N,)."""
        if hidden.shape[:-1] != targets.shape:
            raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree")
        head_lp = self._head_log_probs(hidden)  # (N, shortlist + n_clusters)
        if self.n_clusters == 0:
            return -head_lp.gather(1, targets[:, None]).squeeze(1)
        nll = torch.zeros(targets.shape, dtype=head_lp.dtype, device=hidden.device)
        for i, (start, end) in enumerate(self.bounds):
            index = ((targets >= start) & (targets < end)).nonzero().squeeze(1)  # (N_i,)
            if index.numel() == 0:
                continue
            target_i = targets.index_select(0, index) - start
            if i == 0:
                lp = head_lp.index_select(0, index).gather(1, target_i[:, None]).squeeze(1)
            else:
                tail_lp = F.log_softmax(
                    _full_precision(self._logits(hidden.index_select(0, index), *self._cluster_params(i))), dim=-1)
                lp = head_lp[index, self.shortlist + i - 1] + tail_lp.gather(1, target_i[:, None]).squeeze(1)
            nll = nll.index_copy(0, index, -lp)
        return nll

    def log_probs(self, hidden: Tensor) -> Tensor:
        """Full log-probabilities over the vocabulary: hidden (N, C) -> (N, V), at least float32."""
        head_lp = self._head_log_probs(hidden)  # (N, shortlist + n_clusters)
        if self.n_clusters == 0:
            return head_lp
        parts = [head_lp[:, : self.shortlist]]
        for i in range(1, self.n_clusters + 1):
            tail_lp = F.log_softmax(_full_precision(self._logits(hidden, *self._cluster_params(i))), dim=-1)
            parts.append(head_lp[:, self.shortlist + i - 1, None] + tail_lp)  # (N, V_i)
        return torch.cat(parts, dim=-1)  # (N, V)
