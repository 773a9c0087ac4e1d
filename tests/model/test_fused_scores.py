"""The fused score pass (_MaskedSoftmax: rel-shift + add + mask + softmax, one autograd node) equals the
unfused chain it replaced, forward and backward, and stays sane under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.model.attention import MultiHeadAttention, _MaskedSoftmax, _RelShiftAdd, attention_mask, rel_shift

V = 30


def masks(qlen: int, mlen: int) -> list[torch.Tensor]:
    cpu = torch.device("cpu")
    return [attention_mask(qlen=qlen, mlen=mlen, mem_len=mlen, same_length=same, device=cpu) for same in (False, True)]


def as_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(mask, float("-inf"))


def unfused(pos: torch.Tensor | None, base: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The chain before fusion: shift-add-mask node, then torch's softmax (float32 for low precision)."""
    scores = base + bias if pos is None else _RelShiftAdd.apply(pos, base, bias)
    low = scores.dtype in (torch.float16, torch.bfloat16)
    return torch.softmax(scores.float() if low else scores, dim=-1).to(base.dtype)


@pytest.mark.parametrize("qlen,mlen", [(6, 0), (5, 9), (1, 7)])
@pytest.mark.parametrize("with_pos", [True, False])
def test_forward_and_gradients_equal_the_unfused_chain(qlen, mlen, with_pos):
    gen = torch.Generator().manual_seed(qlen * 31 + mlen)
    klen = qlen + mlen
    for mask in masks(qlen, mlen):
        bias = as_bias(mask, torch.float32)
        pos = torch.randn(2, 3, qlen, klen, generator=gen, requires_grad=True) if with_pos else None
        base = torch.randn(2, 3, qlen, klen, generator=gen, requires_grad=True)
        upstream = torch.randn(2, 3, qlen, klen, generator=gen)
        fused = _MaskedSoftmax.apply(pos, base, bias)
        reference = unfused(pos, base, bias)
        torch.testing.assert_close(fused, reference, atol=1e-6, rtol=1e-6)
        assert torch.all(fused[mask.expand_as(fused)] == 0)
        inputs = (base,) if pos is None else (base, pos)
        got = torch.autograd.grad(fused, inputs, upstream)
        want = torch.autograd.grad(reference, inputs, upstream)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


def test_gradcheck_float64():
    qlen, mlen = 4, 3
    bias = as_bias(masks(qlen, mlen)[1], torch.float64)
    pos = torch.randn(1, 2, qlen, qlen + mlen, dtype=torch.float64, requires_grad=True)
    base = torch.randn(1, 2, qlen, qlen + mlen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, b: _MaskedSoftmax.apply(p, b, bias), (pos, base))


def test_fused_equals_shift_then_softmax_by_definition():
    """Independent of _RelShiftAdd: softmax over (base + rel_shift(pos)) with blocked entries exactly 0."""
    qlen, mlen = 5, 4
    mask = masks(qlen, mlen)[0]
    pos, base = torch.randn(2, 2, qlen, qlen + mlen), torch.randn(2, 2, qlen, qlen + mlen)
    expected = torch.softmax((base + rel_shift(pos)).masked_fill(mask, float("-inf")), dim=-1)
    torch.testing.assert_close(_MaskedSoftmax.apply(pos, base, as_bias(mask, torch.float32)), expected)


def _reference_attend(self, q, k, v, pos, mask_bias):
    """The explicit path of MultiHeadAttention._attend before fusion."""
    scores = q @ k.transpose(-1, -2)
    probs = unfused(pos, scores, mask_bias).to(v.dtype)
    return self.dropatt(probs) @ v


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=V, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                   attn_dropout=0.0, seg_len=5, mem_len=7, attn_impl="explicit")
    options.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**options))).train()


def run(model: TransformerXLLM, x: torch.Tensor, precision: torch.dtype | None = None) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision is not None):
        first = model(x[:, :5], x[:, 1:6])
        loss = first.loss.float().mean() + model(x[:, 5:10], x[:, 6:11], memory=first.memory).loss.float().mean()
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("attn_type", ["xl", "shaw", "vaswani"])
def test_model_explicit_path_equals_unfused(attn_type, monkeypatch):
    model = make_model(attn_type=attn_type, same_length=True, clamp_len=4)
    x = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(0))
    loss = run(model, x)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    monkeypatch.setattr(MultiHeadAttention, "_attend", _reference_attend)
    torch.testing.assert_close(run(model, x), loss, atol=1e-6, rtol=1e-6)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-6, msg=name)


def test_bf16_autocast_is_sane(monkeypatch):
    model = make_model()
    x = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(1))
    loss32 = run(model, x)
    grads32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    loss16 = run(model, x, torch.bfloat16)
    grads16 = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(grads16).all()
    assert abs(loss16 - loss32) / loss32 < 0.03
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.98
    # against the unfused chain under the same autocast (which keeps float32 probabilities for backward)
    monkeypatch.setattr(MultiHeadAttention, "_attend", _reference_attend)
    torch.testing.assert_close(run(model, x, torch.bfloat16), loss16, atol=0, rtol=0)  # same forward
    grads_ref = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.nn.functional.cosine_similarity(grads16, grads_ref, dim=0) > 0.999


def test_keeps_only_the_probabilities_in_their_own_dtype():
    """The one tensor kept for backward is the output itself (bf16: no float32 copy, unlike the unfused chain)."""
    saved: list[torch.Tensor] = []
    bias = as_bias(masks(4, 3)[0], torch.bfloat16)
    pos = torch.randn(2, 2, 4, 7, dtype=torch.bfloat16, requires_grad=True)
    base = torch.randn(2, 2, 4, 7, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        probs = _MaskedSoftmax.apply(pos, base, bias)
    assert len(saved) == 1 and saved[0].dtype == torch.bfloat16
    assert saved[0].untyped_storage().data_ptr() == probs.untyped_storage().data_ptr()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        unfused(pos, base, bias)
    assert any(t.dtype == torch.float32 and t.shape == probs.shape for t in saved)  # what fusion removed
