"""torch.compile on CPU: the whole forward is one graph (no break falls back to eager), and a compiled model
trains with the same losses and gradients as the eager one, memory carried across segments."""

from __future__ import annotations

import pytest
import torch

from transformer_xl import ModelConfig, SegmentRunner, TransformerXLLM

pytestmark = pytest.mark.slow


def _model() -> TransformerXLLM:
    torch.manual_seed(0)
    config = ModelConfig(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                         seg_len=6, mem_len=6, attn_impl="explicit")
    return TransformerXLLM(config).train()


def test_compiled_training_equals_eager_without_graph_breaks():
    torch._dynamo.reset()
    eager, compiled_base = _model(), _model()
    compiled = torch.compile(compiled_base, fullgraph=True)  # a graph break raises instead of falling back
    x = torch.randint(0, 50, (2, 19))
    runners = SegmentRunner(eager), SegmentRunner(compiled)
    for start in (0, 6, 12):  # no memory, then memory: each shape compiles once
        losses = [r.step(x[:, start:start + 6], x[:, start + 1:start + 7]).loss.mean() for r in runners]
        torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
        for loss in losses:
            loss.backward()
    grads = dict(compiled_base.named_parameters())
    for name, p in eager.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
