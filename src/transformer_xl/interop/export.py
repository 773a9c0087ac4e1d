"""Inference export: a fixed-shape, memory-carrying step as a ``torch.export`` program.

An exported program has static shapes, but Transformer-XL's memory grows from empty to ``mem_len``.
:class:`StreamingStep` therefore keeps a memory of exactly ``mem_len`` positions whose leading
``padding`` positions hold no token and are masked out; masked keys get exactly zero attention, so the
program computes the same log-probabilities as the eager model starting from an empty memory.

    program = export_streaming(model, batch_size=1, seg_len=64)
    torch.export.save(program, "model.pt2")
    session = StreamingSession(program.module(), model.config, batch_size=1)
    log_probs = session.step(tokens)            # (1, 64, V), memory carried to the next call
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig, TransformerXLError
from ..model import Memory, TransformerXLLM


class StreamingStep(nn.Module):
    """(x, mems, padding) -> (log_probs, new_mems, new_padding), every shape fixed.

    x (B, T); mems: one (B, mem_len, C) tensor per layer; padding (B,) long: leading memory positions
    that hold no token (mem_len at the start of a stream).
    """

    def __init__(self, model: TransformerXLLM) -> None:
        super().__init__()
        if model.config.mem_len == 0:
            raise TransformerXLError("a streaming export needs a memory: mem_len is 0")
        self.model = model

    def forward(self, x: Tensor, mems: tuple[Tensor, ...], padding: Tensor
                ) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
        # Plain tensors in and out (an exported program's inputs), one Memory value inside.
        out = self.model(x, memory=Memory(mems, padding=padding), return_log_probs=True)
        assert out.memory is not None and out.memory.padding is not None
        return out.log_probs, out.memory.states, out.memory.padding


def initial_state(config: ModelConfig, batch_size: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> tuple[tuple[Tensor, ...], Tensor]:
    """An all-padding memory: the exported equivalent of an empty memory."""
    mems = tuple(torch.zeros(batch_size, config.mem_len, config.d_model, dtype=dtype, device=device)
                 for _ in range(config.n_layer))
    return mems, torch.full((batch_size,), config.mem_len, dtype=torch.long, device=device)


def export_streaming(model: TransformerXLLM, *, batch_size: int, seg_len: int) -> torch.export.ExportedProgram:
    """Export the memory-carrying step for inputs of shape (batch_size, seg_len), in eval mode."""
    if batch_size <= 0 or seg_len <= 0:
        raise TransformerXLError(f"batch_size and seg_len must be positive, got {batch_size}, {seg_len}")
    param = next(model.parameters())
    step = StreamingStep(model).eval()
    x = torch.zeros(batch_size, seg_len, dtype=torch.long, device=param.device)
    mems, padding = initial_state(model.config, batch_size, dtype=param.dtype, device=param.device)
    with torch.no_grad():
        return torch.export.export(step, (x, mems, padding))


class StreamingSession:
    """Runs an exported (or eager) :class:`StreamingStep`, carrying the memory between calls."""

    def __init__(self, step: nn.Module, config: ModelConfig, *, batch_size: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.step_module = step
        self.mems, self.padding = initial_state(config, batch_size, dtype=dtype, device=device)

    @torch.no_grad()
    def step(self, x: Tensor) -> Tensor:
        log_probs, self.mems, self.padding = self.step_module(x, self.mems, self.padding)
        return log_probs
