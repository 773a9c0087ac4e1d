"""Multi-head attention over [memory ; segment] and the four positional variants of the paper's ablation.

Each variant is one small class; they share the projections, masking, softmax and output path of
:class:`MultiHeadAttention` and differ only in how positions enter:

- :class:`XLRelativeAttention` (default, paper section 3.3): score = (q + u)·k + (q + v)·W_kR R_{i-j}.
- :class:`ShawRelativeAttention` (Shaw et al. 2018): a learned embedding and bias per distance.
- :class:`VaswaniAbsoluteAttention`: the sinusoid added to the attention input at every layer.
- :class:`AlRfouAbsoluteAttention` (Al-Rfou et al. 2019): a learned absolute embedding per layer.

The positional term of the relative variants is computed once per forward for all batch elements
(shape (H, K, D)) and aligned with :func:`rel_shift`. Two execution paths give the same result:
``explicit`` (matmul, mask, softmax, matmul) and ``sdpa`` (torch's scaled_dot_product_attention with
the positional term as an additive bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig


# --------------------------------------------------------------------------------------------------
def rel_shift(scores: Tensor) -> Tensor:
    """Align position scores to query-key pairs: out[..., i, j] = scores[..., i, j + T - 1 - i].

    ``scores[..., i, c]`` holds query i against the encoding of distance K-1-c (the encodings are laid
    out from the farthest distance K-1 down to 0). Query i sits at key position M + i, so the pair
    (i, j) needs distance M + i - j, i.e. column j + T - 1 - i. In the flattened (T, K) block that is
    element i*(K-1) + j + (T-1): a strided view with row stride K-1 and offset T-1, no copy. Entries
    with j > M + i (the future, always masked) read neighbouring values and must stay masked.
    """
    *lead, qlen, klen = scores.shape
    if torch.compiler.is_compiling():
        return _rel_shift_by_padding(scores)
    scores = scores.contiguous()
    strides = list(scores.stride())
    strides[-2] = klen - 1
    return scores.as_strided((*lead, qlen, klen), strides, scores.storage_offset() + qlen - 1)


def _rel_shift_by_padding(scores: Tensor) -> Tensor:
    """:func:`rel_shift` without a strided view, for torch.compile (it cannot trace ``storage_offset``).

    A zero column in front makes each row K + 1 long; read as rows of length T, dropping the first row
    moves row i left by T - 1 - i: out[..., i, j] = scores[..., i, j + T - 1 - i] wherever that index is
    in range, which covers every unmasked pair. The future (masked) entries differ from the view's.
    """
    *lead, qlen, klen = scores.shape
    padded = F.pad(scores, (1, 0)).reshape(*lead, klen + 1, qlen)  # (..., K+1, T)
    return padded[..., 1:, :].reshape(*lead, qlen, klen)


def _rel_unshift(grad: Tensor) -> Tensor:
    """Adjoint of :func:`rel_shift` for gradients that are zero on the masked future entries.

    Each output entry (i, j) came from input (i, j + T - 1 - i); writing the flattened gradient at offset
    T - 1 of a (T, K + 1) buffer puts it back there. Input entries no valid pair used (distances beyond
    K - 1) receive a masked, hence zero, gradient. One copy instead of as_strided's generic backward.
    (Softmax's gradient cannot be written straight into that buffer: its slots are not contiguous across
    batch and heads, and torch's softmax-gradient kernel fills an output as if it were.)
    """
    *lead, qlen, klen = grad.shape
    flat = grad.reshape(-1, qlen * klen)  # (N, T*K)
    buf = grad.new_empty(flat.shape[0], qlen * (klen + 1))  # (N, T*(K+1)); only the ends need zeros
    buf[:, : qlen - 1] = 0
    buf[:, qlen - 1: qlen - 1 + qlen * klen] = flat
    buf[:, qlen - 1 + qlen * klen:] = 0
    return buf.view(*lead, qlen, klen + 1)[..., :klen]  # (..., T, K)


class _RelShiftAdd(torch.autograd.Function):
    """base + rel_shift(pos) + mask in one pass; the backward un-shifts without as_strided's overhead.

    Only valid where the mask sends every future entry to -inf (their gradient is then exactly zero),
    which is how the attention below uses it.
    """

    @staticmethod
    def forward(ctx, pos: Tensor, base: Tensor, mask_bias: Tensor) -> Tensor:  # type: ignore[override]
        ctx.base_shape = base.shape
        out = torch.add(rel_shift(pos), base)  # (B, H, T, K)
        return out.add_(mask_bias)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad_pos = _rel_unshift(grad) if ctx.needs_input_grad[0] else None
        grad_base = grad.sum_to_size(ctx.base_shape) if ctx.needs_input_grad[1] else None
        return grad_pos, grad_base, None


class _MaskedSoftmax(torch.autograd.Function):
    """softmax(base + rel_shift(pos) + mask_bias) in one autograd node, keeping only the probabilities.

    The unfused chain keeps nothing of the scores either, but it runs shift-add and softmax as two nodes
    and, in bf16/fp16, softmax saves its float32 output besides the low-precision copy the value product
    keeps. Here the one saved tensor is the returned probabilities (shared with that product), and the
    backward is softmax's, grad_scores = p * (g - sum(g * p)), followed by the one-copy un-shift.
    ``pos`` may be None (absolute variants). Valid only where the mask sends every future entry to -inf,
    as for :class:`_RelShiftAdd`; low-precision scores go through softmax in float32, as before (the
    backward then starts from the rounded probabilities, as the value product's does).
    """

    @staticmethod
    def forward(ctx, pos: Tensor | None, base: Tensor, mask_bias: Tensor) -> Tensor:  # type: ignore[override]
        scores = base + mask_bias if pos is None else torch.add(rel_shift(pos), base).add_(mask_bias)
        if scores.dtype in (torch.float16, torch.bfloat16):
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)
        else:
            probs = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(probs)
        ctx.base_shape = base.shape
        return probs  # (B, H, T, K)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (probs,) = ctx.saved_tensors
        # torch's own softmax gradient kernel, one pass; for bf16/fp16 it accumulates in float32 itself
        # (measured 4x faster on CPU than converting both operands to float32 first).
        grad_scores = torch._softmax_backward_data(grad.to(probs.dtype), probs, -1, probs.dtype)
        grad_pos = _rel_unshift(grad_scores) if ctx.needs_input_grad[0] else None
        grad_base = grad_scores.sum_to_size(ctx.base_shape) if ctx.needs_input_grad[1] else None
        return grad_pos, grad_base, None


def attention_mask(*, qlen: int, mlen: int, mem_len: int, same_length: bool,
                   device: torch.device) -> Tensor:
    """Boolean (T, K) mask, True where query i may NOT attend key j.

    Causal over [memory ; segment]: key j is visible to query i when j <= M + i. With ``same_length``
    every query also sees at most max(mem_len, 1) most recent positions (itself included), the
    original's rule; the max keeps a row from being fully masked when mem_len is 0.
    """
    query = torch.arange(qlen, device=device)[:, None] + mlen  # (T, 1) key position of each query
    key = torch.arange(mlen + qlen, device=device)[None, :]  # (1, K)
    mask = key > query
    if same_length:
        mask = mask | (query - key >= max(mem_len, 1))
    return mask  # (T, K)


@dataclass
class AttentionContext:
    """What every layer of one forward shares: lengths, mask, positional encodings, global biases."""

    qlen: int
    mlen: int
    mask: Tensor  # (T, K) or (B, 1, T, K) bool, True = blocked
    pos_emb: Tensor | None = None  # (K, C) sinusoid of distances K-1..0 (after dropout), when used
    r_w_bias: Tensor | None = None  # (H, D) global u, unless untie_rel_bias
    r_r_bias: Tensor | None = None  # (H, D) global v, unless untie_rel_bias

    _mask_biases: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)

    @property
    def klen(self) -> int:
        return self.qlen + self.mlen

    def mask_bias(self, dtype: torch.dtype) -> Tensor:
        """The mask as an additive bias (0 or -inf), built once per forward and dtype, not per layer."""
        if dtype not in self._mask_biases:
            bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
            self._mask_biases[dtype] = bias.masked_fill_(self.mask, float("-inf"))
        return self._mask_biases[dtype]


def _distance_index(klen: int, table_size: int, device: torch.device) -> Tensor:
    """Row of a per-distance table for keys j = 0..K-1 (distance K-1-j), clamped at the table's end."""
    return torch.arange(klen - 1, -1, -1, device=device).clamp(max=table_size - 1)  # (K,)


# --------------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Shared machinery: fused QKV projection, masking, softmax, output projection, residual + norm.

    Subclasses override :meth:`add_positions` (absolute variants) or :meth:`position_terms`
    (relative variants). Parameter names follow the original release.
    """

    uses_sinusoid = False  # the model computes AttentionContext.pos_emb when any layer needs it
    uses_global_rel_bias = False  # the model owns u and v shared by all layers (unless untied)
    reusable_kv = True  # memory keys/values can be cached across segments (not when positions are added)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.d_head, self.d_model = config.n_head, config.d_head, config.d_model
        self.pre_norm = config.pre_norm
        self.impl = config.attn_impl
        self.scale = 1.0 / math.sqrt(config.d_head)
        self.attn_dropout = config.attn_dropout
        inner = config.n_head * config.d_head
        self.qkv_net = nn.Linear(config.d_model, 3 * inner, bias=False)
        self.o_net = nn.Linear(inner, config.d_model, bias=False)
        self.layer_norm = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.dropatt = nn.Dropout(config.attn_dropout)
        self.recompute = config.recompute_attention
        # The dense product of the sliced projections below (queries only for the segment); device
        # kernels (transformer_xl.kernels) may replace it on an instance, as they replace nn.Linear.
        self.dense = F.linear

    # Hooks ----------------------------------------------------------------------------------------
    def add_positions(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        """Absolute variants add position embeddings to the attention input (B, K, C)."""
        return x

    def position_terms(self, q: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor | None]:
        """For a query already multiplied by 1/sqrt(d_head): the query of the content term and the
        positional score (B, H, T, K) before :func:`rel_shift` (None for absolute variants), both scaled."""
        return q, None

    # Forward --------------------------------------------------------------------------------------
    def _project(self, x: Tensor, qlen: int) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, K, C) -> q (B, H, T, D) from the last T rows; k, v (B, H, K, D) from all rows."""
        bsz, klen, _ = x.shape
        inner = self.n_head * self.d_head
        if klen == qlen:
            q, k, v = self.qkv_net(x).split(inner, dim=-1)  # 3 x (B, K, H*D)
        else:
            weight = self.qkv_net.weight  # (3*H*D, C): queries only for the segment, not the memory
            q = self.dense(x[:, -qlen:], weight[:inner])  # (B, T, H*D)
            k, v = self.dense(x, weight[inner:]).split(inner, dim=-1)  # 2 x (B, K, H*D)
        q = q.view(bsz, qlen, self.n_head, self.d_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(bsz, klen, self.n_head, self.d_head).transpose(1, 2)  # (B, H, K, D)
        v = v.view(bsz, klen, self.n_head, self.d_head).transpose(1, 2)  # (B, H, K, D)
        return q, k, v

    def _use_sdpa(self, q: Tensor) -> bool:
        if self.impl != "auto":
            return self.impl == "sdpa"
        if torch.jit.is_tracing():  # one fixed path: a trace must not depend on whether gradients are on
            return False
        # Measured on CPU (benchmarks/RESULTS.md): SDPA's fused kernel wins without gradients, but with a
        # positional bias that needs a gradient it falls back to a slower path than the explicit one.
        return q.device.type != "cpu" or not q.requires_grad

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Tensor | None, mask_bias: Tensor) -> Tensor:
        """softmax(q·k + rel_shift(pos) + mask_bias) · v -> (B, H, T, D); q and pos are already scaled."""
        if self._use_sdpa(q):
            bias = mask_bias if pos is None else _RelShiftAdd.apply(pos, mask_bias, mask_bias.new_zeros(()))
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0, scale=1.0)
        scores = q @ k.transpose(-1, -2)  # (B, H, T, D) @ (B, H, D, K) -> (B, H, T, K)
        probs = _MaskedSoftmax.apply(pos, scores, mask_bias).to(v.dtype)  # shift + add + mask + softmax
        return self.dropatt(probs) @ v  # (B, H, T, K) @ (B, H, K, D) -> (B, H, T, D)

    def _score_block(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext, mask_bias: Tensor) -> Tensor:
        """Positional terms, scores, softmax, dropout and the weighted sum: (B, H, T, D) from scaled q."""
        q, pos = self.position_terms(q, ctx)
        return self._attend(q, k, v, pos, mask_bias)

    def _attend_with_probs(self, q: Tensor, k: Tensor, v: Tensor, pos: Tensor | None,
                           mask_bias: Tensor) -> tuple[Tensor, Tensor]:
        """The explicit path of :meth:`_attend`, also returning the probabilities (B, H, T, K) (before dropout)."""
        scores = q @ k.transpose(-1, -2)  # (B, H, T, D) @ (B, H, D, K) -> (B, H, T, K)
        scores = scores + mask_bias if pos is None else rel_shift(pos) + scores + mask_bias
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # (B, H, T, K)
        return self.dropatt(probs) @ v, probs  # (B, H, T, K) @ (B, H, K, D) -> (B, H, T, D)

    def forward(self, h: Tensor, *, mem: Tensor | None, ctx: AttentionContext,
                mem_kv: tuple[Tensor, Tensor] | None = None,
                return_probs: bool = False) -> tuple[Tensor, tuple[Tensor, Tensor]] | tuple[Tensor, tuple, Tensor]:
        """h (B, T, C), mem (B, M, C) or None -> (B, T, C) after the residual connection and norm, and the
        keys and values (B, H, K, D) of [memory ; segment]; with ``return_probs`` also the attention
        probabilities (B, H, T, K), computed on the explicit path.

        ``mem_kv``: the memory's keys and values from the previous segment. A memory row's key and value
        depend only on that row (the relative variants add no position to them), so reusing them skips
        projecting the memory again: the same result for a fraction of the cost at inference.
        """
        bsz, qlen, _ = h.shape
        if mem_kv is not None:
            x = self.layer_norm(h) if self.pre_norm else h
            q, k, v = self._project(x, qlen)  # (B, H, T, D) each
            k = torch.cat([mem_kv[0].to(k.dtype), k], dim=2)  # (B, H, K, D)
            v = torch.cat([mem_kv[1].to(v.dtype), v], dim=2)
        else:
            cat = h if mem is None else torch.cat([mem.to(h.dtype), h], dim=1)  # (B, K, C)
            x = self.layer_norm(cat) if self.pre_norm else cat
            q, k, v = self._project(self.add_positions(x, ctx), qlen)
        q, probs = q * self.scale, None
        mask_bias = ctx.mask_bias(q.dtype)
        if return_probs:
            q, pos = self.position_terms(q, ctx)
            attn, probs = self._attend_with_probs(q, k, v, pos, mask_bias)  # (B, H, T, D)
        elif self.recompute and self.training and torch.is_grad_enabled():
            # Backward keeps q, k, v and recomputes the (B, H, T, K) positional term, scores, probabilities
            # and dropout mask (the RNG state is restored, so the mask is the same) instead of storing them.
            attn = checkpoint(self._score_block, q, k, v, ctx, mask_bias, use_reentrant=False)
        else:
            attn = self._score_block(q, k, v, ctx, mask_bias)  # (B, H, T, D)
        out = self.o_net(attn.transpose(1, 2).reshape(bsz, qlen, self.n_head * self.d_head))  # (B, T, C)
        out = self.drop(out)
        out = h + out if self.pre_norm else self.layer_norm(h + out)
        return (out, (k, v)) if probs is None else (out, (k, v), probs)


class XLRelativeAttention(MultiHeadAttention):
    """Transformer-XL relative attention (paper section 3.3, terms (a)+(c) and (b)+(d))."""

    uses_sinusoid = True
    uses_global_rel_bias = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.r_net = nn.Linear(config.d_model, config.n_head * config.d_head, bias=False)  # W_{k,R}
        if config.untie_rel_bias:
            self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))  # u
            self.r_r_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))  # v
        else:
            self.r_w_bias = self.r_r_bias = None

    def position_terms(self, q: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor]:
        assert ctx.pos_emb is not None
        u = self.r_w_bias if self.r_w_bias is not None else ctx.r_w_bias
        v = self.r_r_bias if self.r_r_bias is not None else ctx.r_r_bias
        klen = ctx.klen
        r = self.r_net(ctx.pos_emb.to(q.dtype)).view(klen, self.n_head, self.d_head).transpose(0, 1)  # (H, K, D)
        u, v = (u * self.scale).to(q.dtype), (v * self.scale).to(q.dtype)
        bd = (q + v[:, None, :]) @ r.transpose(-1, -2)  # (B, H, T, D) @ (H, D, K) -> (B, H, T, K)
        return q + u[:, None, :], bd


class ShawRelativeAttention(MultiHeadAttention):
    """Shaw et al. (2018) style: learned per-distance key embeddings and biases (original attn_type 1).

    Distances beyond the table (seg_len + ext_len + mem_len at construction) share its last row.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.table_size = config.max_klen
        self.r_emb = nn.Parameter(torch.empty(self.table_size, config.n_head, config.d_head))  # by distance
        self.r_bias = nn.Parameter(torch.empty(self.table_size, config.n_head))  # by distance
        self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))

    def position_terms(self, q: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor]:
        index = _distance_index(ctx.klen, self.table_size, q.device)
        r_emb = self.r_emb[index].transpose(0, 1).to(q.dtype)  # (H, K, D)
        r_bias = self.r_bias[index].t().to(q.dtype)  # (H, K)
        bd = q @ r_emb.transpose(-1, -2)  # (B, H, T, D) @ (H, D, K) -> (B, H, T, K)
        bd = bd + self.scale * r_bias[:, None, :]
        return q + (self.scale * self.r_w_bias[:, None, :]).to(q.dtype), bd


class VaswaniAbsoluteAttention(MultiHeadAttention):
    """The sinusoid of positions added to the attention input of every layer (original attn_type 2).

    Positions count back from the last key (K-1 ... 0), as the original, so a segment's own tokens
    get the same encodings whatever the memory length.
    """

    uses_sinusoid = True
    reusable_kv = False  # a memory row's position, hence its key, changes every segment

    def add_positions(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        assert ctx.pos_emb is not None
        return x + ctx.pos_emb.to(x.dtype)  # (B, K, C) + (K, C)


class AlRfouAbsoluteAttention(MultiHeadAttention):
    """Learned absolute position embeddings in every layer (Al-Rfou et al. 2019; original attn_type 3).

    The vanilla baseline: trained without recurrence (mem_len 0). Positions count back from the last
    key; positions beyond the table share its last row.
    """

    reusable_kv = False  # a memory row's position, hence its key, changes every segment

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.table_size = config.max_klen
        self.r_emb = nn.Parameter(torch.empty(self.table_size, config.d_model))

    def add_positions(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        index = _distance_index(ctx.klen, self.table_size, x.device)
        return x + self.r_emb[index].to(x.dtype)  # (B, K, C) + (K, C)


ATTENTION_CLASSES: dict[str, type[MultiHeadAttention]] = {
    "xl": XLRelativeAttention,
    "shaw": ShawRelativeAttention,
    "vaswani": VaswaniAbsoluteAttention,
    "al-rfou": AlRfouAbsoluteAttention,
}
