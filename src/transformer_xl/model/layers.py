"""Position-wise feed-forward and the decoder layer (attention then feed-forward)."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModelConfig
from .attention import AttentionContext, MultiHeadAttention


class PositionwiseFF(nn.Module):
    """Linear -> ReLU -> dropout -> linear -> dropout, with residual and layer norm (pre or post)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        # The name CoreNet and the Sequential indices (0, 3) match the original release's parameters.
        self.CoreNet = nn.Sequential(
            nn.Linear(config.d_model, config.d_inner),
            nn.ReLU(),  # not in place: a device kernel's linear may return a view of its result
            nn.Dropout(config.dropout),
            nn.Linear(config.d_inner, config.d_model),
            nn.Dropout(config.dropout),
        )
        self.layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, h: Tensor) -> Tensor:
        if self.pre_norm:
            return h + self.CoreNet(self.layer_norm(h))
        return self.layer_norm(h + self.CoreNet(h))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, attention: type[MultiHeadAttention]) -> None:
        super().__init__()
        self.dec_attn = attention(config)
        self.pos_ff = PositionwiseFF(config)

    def forward(self, h: Tensor, mem: Tensor | None, ctx: AttentionContext,
                mem_kv: tuple[Tensor, Tensor] | None = None, return_probs: bool = False
                ) -> tuple[Tensor, tuple[Tensor, Tensor]] | tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        """h (B, T, C), mem (B, M, C) or None -> (B, T, C), and the attention's keys and values (and, with
        ``return_probs``, its probabilities (B, H, T, K))."""
        if return_probs:
            h, kv, probs = self.dec_attn(h, mem=mem, ctx=ctx, mem_kv=mem_kv, return_probs=True)
            return self.pos_ff(h), kv, probs
        h, kv = self.dec_attn(h, mem=mem, ctx=ctx, mem_kv=mem_kv)
        return self.pos_ff(h), kv
