"""Token and position embeddings: the sinusoid of relative distances and the adaptive input embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig


def cluster_bounds(config: ModelConfig) -> list[tuple[int, int]]:
    """[start, end) token ids of the head (first) cluster and each tail cluster."""
    ends = (0,) + config.cutoffs + (config.n_token,)
    return [(ends[i], ends[i + 1]) for i in range(len(ends) - 1)]


def cluster_dims(config: ModelConfig) -> list[int]:
    """Embedding size of each cluster: d_embed // div_val**i (adaptive input, Baevski & Auli)."""
    if config.div_val == 1:
        return [config.d_embed]
    return [config.d_embed // (config.div_val ** i) for i in range(config.n_clusters + 1)]


class SinusoidPositionEmbedding(nn.Module):
    """Sinusoid of positions, sin and cos halves concatenated (not interleaved), as the original."""

    inv_freq: Tensor

    def __init__(self, d_model: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        angles = torch.outer(positions.to(self.inv_freq.dtype), self.inv_freq)  # (K, C/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (K, C)


def relative_positions(klen: int, *, clamp_len: int, device: torch.device) -> Tensor:
    """Distances K-1 ... 0 from each key to the last query, clamped at clamp_len when it is > 0."""
    positions = torch.arange(klen - 1, -1, -1, device=device, dtype=torch.float32)  # (K,)
    if clamp_len > 0:
        positions = positions.clamp(max=clamp_len)
    return positions


class AdaptiveEmbedding(nn.Module):
    """Adaptive input embedding: frequent tokens get d_embed dimensions, rarer clusters fewer.

    Every cluster is projected to d_model and the result scaled by sqrt(d_model), as the original.
    Parameter names match the original release (``emb_layers``, ``emb_projs``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_token = config.n_token
        self.d_proj = config.d_model
        self.emb_scale = config.d_model ** 0.5
        self.bounds = cluster_bounds(config)
        dims = cluster_dims(config)
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ParameterList()
        if config.div_val == 1:
            self.emb_layers.append(nn.Embedding(config.n_token, config.d_embed))
            if config.d_embed != config.d_model:
                self.emb_projs.append(nn.Parameter(torch.empty(config.d_model, config.d_embed)))
        else:
            for (start, end), dim in zip(self.bounds, dims):
                self.emb_layers.append(nn.Embedding(end - start, dim))
                self.emb_projs.append(nn.Parameter(torch.empty(config.d_model, dim)))
        self.dense = F.linear  # the projections' product; device kernels may replace it on an instance

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> embeddings (B, T, C)."""
        if len(self.emb_layers) == 1:
            embed = self.emb_layers[0](tokens)  # (B, T, d_embed)
            if len(self.emb_projs) > 0:
                embed = self.dense(embed, self.emb_projs[0])  # (B, T, C)
            return embed * self.emb_scale
        # Every cluster embeds every token (ids clamped into its range) and keeps only its own tokens.
        # Costs a few small projections more than gathering each cluster's tokens, but has no
        # data-dependent shapes: no host sync on GPU, and torch.compile / torch.export can trace it.
        out = None
        for (start, end), layer, proj in zip(self.bounds, self.emb_layers, self.emb_projs):
            inside = (tokens >= start) & (tokens < end)  # (B, T)
            embed = self.dense(layer((tokens - start).clamp(0, end - start - 1)), proj)  # (B, T, C)
            embed = torch.where(inside[..., None], embed, 0.0)
            out = embed if out is None else out + embed
        return out * self.emb_scale  # (B, T, C)
