"""TransformerXLLM: embedding -> L decoder layers over [memory ; segment] -> adaptive log-softmax."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig, TransformerXLError
from .attention import ATTENTION_CLASSES, AttentionContext, attention_mask
from .dropout import Dropout
from .embedding import AdaptiveEmbedding, SinusoidPositionEmbedding, relative_positions
from .layers import DecoderLayer
from .memory import KVCache, Memory, memory_length, update_kv_cache, update_memory
from .softmax import ProjectedAdaptiveLogSoftmax


@dataclass
class XLOutput:
    """Result of one forward over a segment.

    loss: (B, T) per-token negative log-likelihood in input order, when targets were given.
    log_probs: (B, T, V) log-probabilities, when ``return_log_probs=True``.
    mems: one detached (B, M, C) tensor per layer input, to pass to the next segment.
    hidden: (B, T, C) final hidden states (the softmax input), when ``return_hidden=True``.
    kv_cache: per layer, the keys and values of the new memory, when ``use_kv_cache=True``: pass it back
        with ``mems`` to skip re-projecting the memory (inference).
    """

    loss: Tensor | None
    mems: Memory
    log_probs: Tensor | None = None
    hidden: Tensor | None = None
    kv_cache: KVCache | None = None


class TransformerXLLM(nn.Module):
    """Transformer-XL language model (Dai et al. 2019). Memory is passed in and returned explicitly.

    >>> model = TransformerXLLM(ModelConfig.preset("tiny"))
    >>> out = model(x, targets=y)              # first segment: empty memory
    >>> out = model(x2, targets=y2, mems=out.mems)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        attention = ATTENTION_CLASSES[config.attn_type]
        self.word_emb = AdaptiveEmbedding(config)
        self.drop = Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderLayer(config, attention) for _ in range(config.n_layer))
        self.pos_emb = SinusoidPositionEmbedding(config.d_model) if attention.uses_sinusoid else None
        if attention.uses_global_rel_bias and not config.untie_rel_bias:
            self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))  # u, paper section 3.3
            self.r_r_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))  # v
        else:
            self.r_w_bias = self.r_r_bias = None
        self.crit = ProjectedAdaptiveLogSoftmax(config)
        self._tie_weights()
        self.reset_parameters()

    # Construction ---------------------------------------------------------------------------------
    def _tie_weights(self) -> None:
        config = self.config
        if config.tie_weight:
            for out_layer, emb_layer in zip(self.crit.out_layers, self.word_emb.emb_layers):
                out_layer.weight = emb_layer.weight
        for i, tie in enumerate(config.tie_projs):
            if not tie:
                continue
            if config.div_val == 1 and config.d_embed != config.d_model:
                self.crit.out_projs[i] = self.word_emb.emb_projs[0]
            elif config.div_val != 1:
                self.crit.out_projs[i] = self.word_emb.emb_projs[i]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The original initialisation: N(0, init_std) weights, N(0, proj_init_std) projections,
        zero biases, layer-norm gains N(1, init_std)."""
        std, proj_std = self.config.init_std, self.config.proj_init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.normal_(module.weight, 1.0, std)
                nn.init.zeros_(module.bias)
        for proj in list(self.word_emb.emb_projs) + list(self.crit.out_projs):
            if proj is not None:
                nn.init.normal_(proj, 0.0, proj_std)
        if self.crit.n_clusters > 0:
            nn.init.normal_(self.crit.cluster_weight, 0.0, std)
            nn.init.zeros_(self.crit.cluster_bias)
        for name, param in self.named_parameters():
            if name.rsplit(".", 1)[-1] in ("r_w_bias", "r_r_bias", "r_emb", "r_bias"):
                nn.init.normal_(param, 0.0, std)

    def set_lengths(self, *, seg_len: int | None = None, mem_len: int | None = None,
                    ext_len: int | None = None, clamp_len: int | None = None,
                    same_length: bool | None = None) -> None:
        """Change the attention lengths in place (evaluation often uses a longer memory than training)."""
        self.config = self.config.with_lengths(seg_len=seg_len, mem_len=mem_len, ext_len=ext_len,
                                               clamp_len=clamp_len, same_length=same_length)

    @property
    def supports_kv_cache(self) -> bool:
        """Whether ``use_kv_cache`` applies: the relative variants, whose memory keys never change."""
        return self.layers[0].dec_attn.reusable_kv

    def num_parameters(self) -> int:
        """Trainable parameters, tied ones counted once."""
        return sum(p.numel() for p in self.parameters())

    # Forward --------------------------------------------------------------------------------------
    def _check_inputs(self, x: Tensor, targets: Tensor | None, mems: Sequence[Tensor] | None) -> None:
        if x.dim() != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise TransformerXLError(f"x must be an integer tensor (B, T), got {x.dtype} {tuple(x.shape)}")
        if x.numel() == 0:
            raise TransformerXLError(f"x is empty: {tuple(x.shape)}")
        # The range check reads values (a device sync and a graph break): eager mode only.
        low, high = (0, 0) if torch.compiler.is_compiling() else (int(x.min()), int(x.max()))
        if low < 0 or high >= self.config.n_token:
            raise TransformerXLError(
                f"token ids must lie in [0, {self.config.n_token}), got [{low}, {high}]: "
                "is the data encoded with this model's vocabulary?")
        if targets is not None:
            if targets.dim() != 2 or targets.shape[0] != x.shape[0] or not 0 < targets.shape[1] <= x.shape[1]:
                raise TransformerXLError(
                    f"targets {tuple(targets.shape)} must be (B, T') with T' <= T for x {tuple(x.shape)}")
        if mems:
            expected = (x.shape[0], self.config.d_model)
            if len(mems) != self.config.n_layer or any((m.shape[0], m.shape[2]) != expected for m in mems):
                raise TransformerXLError(
                    f"mems must be {self.config.n_layer} tensors of shape (B={x.shape[0]}, M, "
                    f"{self.config.d_model}); got {[tuple(m.shape) for m in mems]}")

    def forward(self, x: Tensor, targets: Tensor | None = None, *, mems: Sequence[Tensor] | None = None,
                mem_padding: Tensor | None = None, kv_cache: KVCache | None = None, use_kv_cache: bool = False,
                return_log_probs: bool = False, return_hidden: bool = False) -> XLOutput:
        """x (B, T) token ids; targets (B, T') predicted from the last T' positions (T' < T when the
        first positions are extended context, ``ext_len``); mems from the previous segment or None.

        ``mem_padding`` (a long tensor, scalar or (B,)) says how many leading memory positions hold no
        token: they are masked out, so a fixed-size memory behaves exactly like a shorter one (used by
        fixed-shape exported programs and batches of prompts of different lengths).

        ``use_kv_cache=True`` returns ``out.kv_cache``, the memory's attention keys and values; passing it
        back as ``kv_cache`` (with the matching ``mems``) reuses them instead of projecting the memory again.
        Same results; for inference (no dropout, fixed weights) with the relative attention variants.
        """
        self._check_inputs(x, targets, mems)
        config = self.config
        bsz, qlen = x.shape
        mlen = memory_length(mems)
        mems = mems if mlen > 0 else None
        klen = mlen + qlen

        h = self.drop(self.word_emb(x.long()))  # (B, T, C)
        pos_emb = None
        if self.pos_emb is not None:
            positions = relative_positions(klen, clamp_len=config.clamp_len, device=x.device)
            pos_emb = self.drop(self.pos_emb(positions))  # (K, C)
        mask = attention_mask(qlen=qlen, mlen=mlen, mem_len=config.mem_len, same_length=config.same_length,
                              device=x.device)  # (T, K)
        if mem_padding is not None:
            padding = mem_padding.to(x.device).reshape(-1, 1, 1, 1)  # (B|1, 1, 1, 1)
            mask = mask | (torch.arange(klen, device=x.device) < padding)  # (B|1, 1, T, K)
        ctx = AttentionContext(qlen=qlen, mlen=mlen, pos_emb=pos_emb, r_w_bias=self.r_w_bias,
                               r_r_bias=self.r_r_bias, mask=mask)

        if (kv_cache is not None or use_kv_cache) and not self.supports_kv_cache:
            raise TransformerXLError(f"attn_type {config.attn_type!r} adds positions to the memory's keys: "
                                     "they change every segment and cannot be cached")
        if kv_cache is not None and mlen > 0:
            self._check_kv_cache(kv_cache, mlen)
        else:
            kv_cache = None
        layer_inputs, kvs = [], []
        for i, layer in enumerate(self.layers):
            layer_inputs.append(h)
            mem_i = None if mems is None else mems[i]
            mem_kv = None if kv_cache is None else kv_cache[i]
            if config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h, kv = checkpoint(layer, h, mem_i, ctx, mem_kv, use_reentrant=False)
            else:
                h, kv = layer(h, mem_i, ctx, mem_kv)
            kvs.append(kv)
        h = self.drop(h)
        new_mems = update_memory(layer_inputs, mems, mem_len=config.mem_len, ext_len=config.ext_len)
        new_kv = None
        if use_kv_cache:
            new_kv = update_kv_cache(kvs, old_len=mlen, qlen=qlen, mem_len=config.mem_len, ext_len=config.ext_len)

        n_pred = qlen if targets is None else targets.shape[1]
        pred = h[:, qlen - n_pred:]  # (B, T', C)
        flat = pred.reshape(-1, config.d_model)  # (B*T', C)
        loss = None
        if targets is not None:
            loss = self.crit(flat, targets.reshape(-1).long()).view(bsz, n_pred)  # (B, T')
        log_probs = self.crit.log_probs(flat).view(bsz, n_pred, -1) if return_log_probs else None
        return XLOutput(loss=loss, mems=new_mems, log_probs=log_probs, hidden=pred if return_hidden else None,
                        kv_cache=new_kv)

    def _check_kv_cache(self, kv_cache: KVCache, mlen: int) -> None:
        expected = (self.config.n_head, mlen, self.config.d_head)
        if len(kv_cache) != self.config.n_layer or any(
                (k.shape[1], k.shape[2], k.shape[3]) != expected or v.shape != k.shape for k, v in kv_cache):
            raise TransformerXLError(
                f"kv_cache must hold (keys, values) of shape (B, {self.config.n_head}, M={mlen}, "
                f"{self.config.d_head}) for each of the {self.config.n_layer} layers, matching mems: pass the "
                "kv_cache returned together with those mems")

    # Persistence (delegated: model/ does no I/O itself) ---------------------------------------------
    def save_pretrained(self, directory: str | Path, **kwargs: Any) -> None:
        """Write config.json and model.safetensors (and a vocabulary, when given) to ``directory``."""
        from ..pretrained import save_pretrained

        save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> "TransformerXLLM":
        """Load a model written by :meth:`save_pretrained` (safetensors + JSON; no pickle)."""
        from ..pretrained import load_pretrained

        return load_pretrained(directory, **kwargs)
