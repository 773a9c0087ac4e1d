"""A small GPT in the style of nanoGPT's CPU example, as the time-to-quality baseline.

Learned absolute positions, pre-norm blocks (LayerNorm, causal self-attention through SDPA, a GELU MLP 4x
wide), a final LayerNorm and an output layer tied to the token embedding; no memory across windows.
Trained on random windows of the training split with AdamW, a linear warmup and a cosine decay over the
steps that fit the time budget. Evaluated on windows of ``context`` tokens that advance by half a window,
scoring the second half of each (the first window scores all its tokens), so every scored token after the
first window sees at least context / 2 tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPTConfig:
    vocab: int
    context: int  # tokens a window holds (equal to the Transformer-XL attention span it is compared with)
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.ln1 = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(nn.Linear(config.d_model, 4 * config.d_model), nn.GELU(),
                                 nn.Linear(4 * config.d_model, config.d_model))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        bsz, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=-1)  # 3 x (B, T, C)
        heads = [t.view(bsz, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v)]
        attn = F.scaled_dot_product_attention(*heads, is_causal=True)  # (B, H, T, C/H)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(bsz, length, width)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab, config.d_model)
        self.pos = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T) -> logits (B, T, V)."""
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device))  # (B, T, C)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))


def train_gpt(config: GPTConfig, train_tokens: np.ndarray, *, seconds: float, batch_size: int = 12,
              lr: float = 1e-3, lr_min: float = 1e-4, warmup: int = 100, weight_decay: float = 0.1, seed: int = 0,
              on_step: Callable[[int, float, float], None] | None = None) -> tuple[GPT, int]:
    """Train for ``seconds`` of wall clock (the cosine decays over those seconds, after a warmup in steps).
    ``on_step(step, seconds since start, loss)``. Returns the model and the steps trained."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = GPT(config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    data = torch.from_numpy(np.asarray(train_tokens, dtype=np.int64))
    span = config.context

    def batch() -> tuple[Tensor, Tensor]:
        starts = torch.from_numpy(rng.integers(0, len(data) - span - 1, size=batch_size))
        index = starts[:, None] + torch.arange(span + 1)[None, :]  # (B, T + 1)
        window = data[index]
        return window[:, :-1], window[:, 1:]

    def step(lr_now: float) -> float:
        for group in optim.param_groups:
            group["lr"] = lr_now
        x, y = batch()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        return loss.item()

    start = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        # warmup in steps times a cosine over the wall clock: at the floor when the time is up, as
        # optim.decay_clock "time" does for the Transformer-XL recipes
        ramp = min(1.0, (n + 1) / warmup) if warmup > 0 else 1.0
        lr_now = ramp * (lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(1.0, elapsed / seconds))))
        loss = step(lr_now)
        n += 1
        if on_step is not None:
            on_step(n, time.perf_counter() - start, loss)
    return model, n


@torch.no_grad()
def evaluate_gpt(model: GPT, tokens: np.ndarray, *, batch_size: int = 16) -> float:
    """Mean NLL (nats) of tokens[1:], windows of ``context`` advancing by half a window."""
    model.eval()
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    span, half = model.config.context, model.config.context // 2
    n_targets = len(data) - 1
    total, count = 0.0, 0
    first = min(span, n_targets)
    logits = model(data[None, :first])
    total += float(F.cross_entropy(logits[0], data[1:first + 1], reduction="sum"))
    count += first
    ends = list(range(first + half, n_targets + half, half))  # window covers targets end-span+1 .. end
    for i in range(0, len(ends), batch_size):
        group = [min(e, n_targets) for e in ends[i:i + batch_size]]
        windows = torch.stack([data[e - span:e] for e in group])  # (B, T) inputs
        targets = torch.stack([data[e - span + 1:e + 1] for e in group])
        nll = F.cross_entropy(model(windows).flatten(0, 1), targets.flatten(), reduction="none").view(len(group), span)
        for row, e in enumerate(group):
            new = e - max(count, e - half)  # targets of this window not scored yet
            if new > 0:
                total += float(nll[row, span - new:].sum())
                count += new
    assert count == n_targets, (count, n_targets)
    return total / count
