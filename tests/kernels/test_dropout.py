"""The CPU dropout: keep rate, unbiasedness, gradient, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from transformer_xl.kernels.dropout import CheapDropout as Dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_expectation(p):
    drop = Dropout(p).train()
    x = torch.ones(1_000_003)  # not a multiple of the four lanes per random word
    y = drop(x)
    kept = (y != 0).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / x.numel())
    assert abs(kept - (1 - p)) < 6 * sigma
    assert abs(y.double().mean().item() - 1.0) < 6 * sigma / (1 - p)  # scaled: expectation preserved
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / (1 - p)), rtol=1e-4))


def test_lanes_are_independent_uniforms():
    """Neighbouring elements come from one random word: their keep decisions must be uncorrelated."""
    drop = Dropout(0.5).train()
    kept = (drop(torch.ones(600_000)) != 0).double().view(-1, 4)
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        both = (kept[:, a] * kept[:, b]).mean().item()
        assert abs(both - 0.25) < 0.006


def test_gradient_is_the_mask_times_the_scale():
    drop = Dropout(0.3).train()
    x = torch.randn(4, 50, requires_grad=True)
    y = drop(x)
    y.sum().backward()
    mask = (y != 0).float()
    torch.testing.assert_close(x.grad, mask / (1 - round(0.3 * 65536) / 65536))


def test_eval_is_identity_and_seeds_reproduce():
    drop = Dropout(0.4)
    x = torch.randn(3, 7)
    assert drop.eval()(x) is x
    drop.train()
    torch.manual_seed(5)
    a = drop(x)
    torch.manual_seed(5)
    assert torch.equal(drop(x), a)
    assert Dropout(0.0).train()(x) is x


def test_every_lane_keeps_at_the_rate():
    """All four 16-bit lanes of a random word (the sign lane included) are uniform."""
    p = 0.3
    kept = (Dropout(p).train()(torch.ones(400_000)) != 0).double().view(-1, 4).mean(0)
    sigma = math.sqrt(p * (1 - p) / 100_000)
    assert torch.all((kept - (1 - p)).abs() < 6 * sigma), kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_and_gradient_keep_the_dtype_and_match_masking(dtype):
    drop = Dropout(0.2).train()
    x = torch.randn(8, 33, dtype=dtype, requires_grad=True)
    y = drop(x)
    assert y.dtype == dtype
    keep = y != 0
    scale = 65536 / (65536 - round(0.2 * 65536))
    torch.testing.assert_close(y, torch.where(keep, x * scale, 0).to(dtype))
    g = torch.randn_like(y)
    y.backward(g)
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad, torch.where(keep, g * scale, 0).to(dtype))
