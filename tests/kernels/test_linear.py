"""The oneDNN fp32 dense path agrees with torch's reference linear, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.kernels import apply_device_kernels, remove_device_kernels
from transformer_xl.kernels import linear as linear_module
from transformer_xl.kernels.dropout import CheapDropout
from transformer_xl.kernels.linear import FastLinear, linear

pytestmark = pytest.mark.skipif(not linear_module._HAVE_ONEDNN, reason="torch built without oneDNN")


@pytest.fixture(autouse=True)
def _fast_path_for_every_size(monkeypatch):
    """The tests use small shapes; route them through oneDNN too (normally only large products are)."""
    monkeypatch.setattr(linear_module, "_MIN_MACS", 0)


def test_the_fast_path_is_taken(monkeypatch):
    calls = []
    monkeypatch.setattr(linear_module._OneDNNLinear, "apply", lambda *a: calls.append(1) or F.linear(*a))
    linear(torch.randn(3, 4), torch.randn(5, 4))
    assert calls == [1]


@pytest.mark.parametrize("shape,bias,sliced", [((37, 24), True, False), ((3, 11, 24), False, False),
                                                ((3, 11, 24), True, True)])
def test_linear_matches_f_linear_with_gradients(shape, bias, sliced):
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(40, 24, requires_grad=True)
    b = torch.randn(40, requires_grad=True) if bias else None
    inp = x[:, -5:] if sliced else x  # non-contiguous, as the query rows of [memory ; segment]
    out = linear(inp, w, b)
    ref = F.linear(inp, w, b)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, [x, w] + ([b] if bias else []), grad)
    want = torch.autograd.grad(ref, [x, w] + ([b] if bias else []), grad)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-5)


def test_model_losses_and_gradients_agree_with_and_without_the_kernels():
    config = ModelConfig.preset("tiny", cutoffs=(64,), div_val=2, dropout=0.0)
    model = TransformerXLLM(config)
    x = torch.randint(0, 256, (2, 20))

    def run():
        model.zero_grad()
        first = model(x[:, :10], x[:, 1:11])
        out = model(x[:, 10:19], x[:, 11:20], memory=first.memory)
        out.loss.mean().backward()
        return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_loss, ref_grads = run()  # plain torch.nn
    apply_device_kernels(model, "cpu")
    loss, grads = run()
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_kernels_are_applied_from_outside_and_removable():
    model = TransformerXLLM(ModelConfig.preset("tiny", cutoffs=(64,), div_val=2))
    assert not any(isinstance(m, (FastLinear, CheapDropout)) for m in model.modules())  # plain torch.nn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    apply_device_kernels(model, "cpu")
    assert all(type(m) is not torch.nn.Linear for m in model.modules())
    assert all(type(m) is not torch.nn.Dropout for m in model.modules())
    assert model.layers[0].dec_attn.dense is linear and model.crit.dense is linear and model.word_emb.dense is linear
    assert model.state_dict().keys() == state.keys()
    apply_device_kernels(model, "cpu")  # idempotent
    remove_device_kernels(model)
    assert not any(isinstance(m, (FastLinear, CheapDropout)) for m in model.modules())
    assert model.crit.dense is F.linear
    apply_device_kernels(model, "cuda:0")  # another device: plain torch.nn (nothing CUDA is touched)
    assert not any(isinstance(m, (FastLinear, CheapDropout)) for m in model.modules())
    apply_device_kernels(model, "cpu", cpu_matmul="mkl", cheap_dropout=False)
    assert not any(isinstance(m, (FastLinear, CheapDropout)) for m in model.modules())
    with pytest.raises(ValueError, match="onednn"):
        apply_device_kernels(model, "cpu", cpu_matmul="openblas")


def test_fp32_segmented_equals_one_pass_on_the_fast_path():
    model = apply_device_kernels(TransformerXLLM(ModelConfig.preset("tiny", dropout=0.0, mem_len=64)).eval(), "cpu")
    x = torch.randint(0, 256, (2, 49))
    full = model(x[:, :-1], x[:, 1:]).loss
    mems, parts = None, []
    for start in range(0, 48, 12):
        out = model(x[:, start:start + 12], x[:, start + 1:start + 13], memory=mems)
        mems = out.memory
        parts.append(out.loss)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
