"""TransformerXLLM: embedding -> L decoder layers over [memory ; segment] -> adaptive log-softmax."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig, TransformerXLError
from .attention import ATTENTION_CLASSES, AttentionContext, attention_mask
from .embedding import AdaptiveEmbedding, SinusoidPositionEmbedding, relative_positions
from .layers import DecoderLayer
from .memory import KeysValues, Memory, as_memory, update_memory
from .sampled_softmax import LogUniformSampler, sampled_softmax_nll
from .softmax import ProjectedAdaptiveLogSoftmax


@dataclass
class XLOutput:
    """Result of one forward over a segment.

    loss: (B, T') per-token negative log-likelihood in input order, when targets were given.
        With ``config.sample_softmax`` > 0, in training mode with gradients, the sampled-softmax surrogate.
    memory: the :class:`Memory` to pass to the next segment (None when ``mem_len`` is 0). It holds the
        memory's attention keys and values too when the call had ``use_kv_cache=True`` (inference).
    log_probs: (B, T', V) log-probabilities, when ``return_log_probs=True``.
    hidden: (B, T', C) final hidden states (the softmax input), when ``return_hidden=True``.
    attentions: per layer the attention probabilities (B, H, T, K), when ``return_attentions=True``.
    layer_outputs: L + 1 tensors (B, T, C): the input of every layer, then the final hidden states (after
        dropout), when ``return_layer_outputs=True``.
    """

    loss: Tensor | None
    memory: Memory | None
    log_probs: Tensor | None = None
    hidden: Tensor | None = None
    attentions: tuple[Tensor, ...] | None = None
    layer_outputs: tuple[Tensor, ...] | None = None


class TransformerXLLM(nn.Module):
    """Transformer-XL language model (Dai et al. 2019). Memory is passed in and returned explicitly.

    The config describes the model as trained; each call says how it is run (its span: ``mem_len``,
    ``clamp_len``, ``same_length``, defaulting to the config's training values).

    >>> model = TransformerXLLM(ModelConfig.preset("tiny"))
    >>> out = model(x, targets=y)              # first segment: empty memory
    >>> out = model(x2, targets=y2, memory=out.memory, mem_len=96)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        attention = ATTENTION_CLASSES[config.attn_type]
        self.word_emb = AdaptiveEmbedding(config)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderLayer(config, attention) for _ in range(config.n_layer))
        self.pos_emb = SinusoidPositionEmbedding(config.d_model) if attention.uses_sinusoid else None
        if attention.uses_global_rel_bias and not config.untie_rel_bias:
            self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))  # u, paper section 3.3
            self.r_r_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))  # v
        else:
            self.r_w_bias = self.r_r_bias = None
        self.crit = ProjectedAdaptiveLogSoftmax(config)
        # training only (forward decides); a plain object: nothing in the state dict
        self.sampler = LogUniformSampler(config.n_token) if config.sample_softmax > 0 else None
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

    @property
    def supports_kv_cache(self) -> bool:
        """Whether ``use_kv_cache`` applies: the relative variants, whose memory keys never change."""
        return self.layers[0].dec_attn.reusable_kv

    def num_parameters(self) -> int:
        """Trainable parameters, tied ones counted once."""
        return sum(p.numel() for p in self.parameters())

    # Forward --------------------------------------------------------------------------------------
    def _check_inputs(self, x: Tensor, targets: Tensor | None, memory: Memory | None) -> None:
        if x.dim() != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise TransformerXLError(f"x must be an integer tensor (B, T), got {x.dtype} {tuple(x.shape)}")
        if x.numel() == 0:
            raise TransformerXLError(f"x is empty: {tuple(x.shape)}")
        # The range check reads values: on CPU that is cheap and turns an IndexError deep in the embedding
        # into a clear message; on an accelerator it would be a host sync per segment, so callers that
        # read data (evaluate, score, train) check their token arrays once instead.
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            low, high = int(x.min()), int(x.max())
            if low < 0 or high >= self.config.n_token:
                raise TransformerXLError(
                    f"token ids must lie in [0, {self.config.n_token}), got [{low}, {high}]: "
                    "is the data encoded with this model's vocabulary?")
        if targets is not None:
            if targets.dim() != 2 or targets.shape[0] != x.shape[0] or not 0 < targets.shape[1] <= x.shape[1]:
                raise TransformerXLError(
                    f"targets {tuple(targets.shape)} must be (B, T') with T' <= T for x {tuple(x.shape)}")
        if memory is not None:
            expected = (x.shape[0], self.config.d_model)
            states = memory.states
            if len(states) != self.config.n_layer or any((m.shape[0], m.shape[2]) != expected for m in states):
                raise TransformerXLError(
                    f"the memory must hold {self.config.n_layer} tensors of shape (B={x.shape[0]}, M, "
                    f"{self.config.d_model}); got {[tuple(m.shape) for m in states]}")
            if memory.keys_values is not None:
                if not self.supports_kv_cache:
                    raise TransformerXLError(f"attn_type {self.config.attn_type!r} adds positions to the memory's "
                                             "keys: they change every segment and cannot be cached")
                self._check_kv_cache(memory.keys_values, memory.length)

    @staticmethod
    def _check_span(mem_len: int, ext_len: int, clamp_len: int) -> None:
        for name, value in (("mem_len", mem_len), ("ext_len", ext_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TransformerXLError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(clamp_len, int) or isinstance(clamp_len, bool):
            raise TransformerXLError(f"clamp_len must be an integer, got {clamp_len!r}")

    def forward(self, x: Tensor, targets: Tensor | None = None, *,
                memory: Memory | Sequence[Tensor] | None = None, mem_len: int | None = None,
                clamp_len: int | None = None, same_length: bool | None = None, ext_len: int | None = None,
                use_kv_cache: bool = False, return_log_probs: bool = False,
                return_hidden: bool = False, return_attentions: bool = False,
                return_layer_outputs: bool = False) -> XLOutput:
        """x (B, T) token ids; targets (B, T') predicted from the last T' positions (T' < T when the
        first positions are extended context, ``ext_len``); ``memory`` from the previous segment, or None.

        The span of this call: ``mem_len`` (positions kept in the returned memory), ``clamp_len``
        (relative distances beyond it share one encoding), ``same_length`` (every query sees at most
        ``mem_len`` keys) and ``ext_len`` (trailing positions left out of the memory, fed again next
        segment); each defaults to the config's training value.

        ``memory`` may also be plain per-layer tensors (B, M, C). A memory with ``padding`` masks out that
        many leading positions, so a fixed-size memory behaves exactly like a shorter one.

        ``use_kv_cache=True`` keeps the memory's attention keys and values in the returned memory; the
        next call then reuses them instead of projecting the memory again (same results; inference with
        the relative attention variants, where a memory row's key never changes).

        ``return_attentions`` / ``return_layer_outputs`` add every layer's attention probabilities (computed
        on the explicit path) / every layer's input and the final states to the output (inspection).
        """
        config = self.config
        mem_len = config.mem_len if mem_len is None else mem_len
        clamp_len = config.clamp_len if clamp_len is None else clamp_len
        same_length = config.same_length if same_length is None else bool(same_length)
        ext_len = config.ext_len if ext_len is None else ext_len
        self._check_span(mem_len, ext_len, clamp_len)
        memory = as_memory(memory)
        self._check_inputs(x, targets, memory)
        if use_kv_cache and not self.supports_kv_cache:
            raise TransformerXLError(f"attn_type {config.attn_type!r} adds positions to the memory's keys: "
                                     "they change every segment and cannot be cached")
        bsz, qlen = x.shape
        mlen = 0 if memory is None else memory.length
        klen = mlen + qlen

        h = self.drop(self.word_emb(x.long()))  # (B, T, C)
        pos_emb = None
        if self.pos_emb is not None:
            positions = relative_positions(klen, clamp_len=clamp_len, device=x.device)
            pos_emb = self.drop(self.pos_emb(positions))  # (K, C)
        mask = attention_mask(qlen=qlen, mlen=mlen, mem_len=mem_len, same_length=same_length,
                              device=x.device)  # (T, K)
        if memory is not None and memory.padding is not None:
            padding = memory.padding.to(x.device).reshape(-1, 1, 1, 1)  # (B|1, 1, 1, 1)
            mask = mask | (torch.arange(klen, device=x.device) < padding)  # (B|1, 1, T, K)
        ctx = AttentionContext(qlen=qlen, mlen=mlen, pos_emb=pos_emb, r_w_bias=self.r_w_bias,
                               r_r_bias=self.r_r_bias, mask=mask)

        cached = None if memory is None else memory.keys_values
        layer_inputs, kvs, attentions = [], [], []
        for i, layer in enumerate(self.layers):
            layer_inputs.append(h)
            mem_i = None if memory is None else memory.states[i]
            mem_kv = None if cached is None else cached[i]
            if return_attentions:
                h, kv, probs = layer(h, mem_i, ctx, mem_kv, True)
                attentions.append(probs)
            elif config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h, kv = checkpoint(layer, h, mem_i, ctx, mem_kv, use_reentrant=False)
            else:
                h, kv = layer(h, mem_i, ctx, mem_kv)
            kvs.append(kv)
        h = self.drop(h)
        new_memory = update_memory(layer_inputs, memory, mem_len=mem_len, ext_len=ext_len,
                                   keys_values=kvs if use_kv_cache else None)

        n_pred = qlen if targets is None else targets.shape[1]
        pred = h[:, qlen - n_pred:]  # (B, T', C)
        flat = pred.reshape(-1, config.d_model)  # (B*T', C)
        loss = None
        if targets is not None and self.sampler is not None and self.training and torch.is_grad_enabled():
            # sampled softmax (model/sampled_softmax.py): a training surrogate over the full softmax's own
            # output weight and bias; evaluation and no-grad calls take the full softmax below
            weight, bias, proj = self.crit._cluster_params(0)
            loss = sampled_softmax_nll(flat, targets.reshape(-1).long(), weight, bias, self.sampler,
                                       config.sample_softmax, proj=proj, dense=self.crit.dense).view(bsz, n_pred)
        elif targets is not None:
            loss = self.crit(flat, targets.reshape(-1).long()).view(bsz, n_pred)  # (B, T')
        log_probs = self.crit.log_probs(flat).view(bsz, n_pred, -1) if return_log_probs else None
        return XLOutput(loss=loss, memory=new_memory, log_probs=log_probs,
                        hidden=pred if return_hidden else None,
                        attentions=tuple(attentions) if return_attentions else None,
                        layer_outputs=(*layer_inputs, h) if return_layer_outputs else None)

    def _check_kv_cache(self, kv_cache: KeysValues, mlen: int) -> None:
        expected = (self.config.n_head, mlen, self.config.d_head)
        if len(kv_cache) != self.config.n_layer or any(
                (k.shape[1], k.shape[2], k.shape[3]) != expected or v.shape != k.shape for k, v in kv_cache):
            raise TransformerXLError(
                f"kv_cache must hold (keys, values) of shape (B, {self.config.n_head}, M={mlen}, "
                f"{self.config.d_head}) for each of the {self.config.n_layer} layers, matching the memory")
