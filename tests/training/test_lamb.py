"""LAMB (training/lamb.py): the update rule against a hand computation, its edge cases, exact state
round trips, the parameter groups, a CLI run that learns, and exact resume."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from training.optimizer_runs import assert_cli_run_learns, assert_resume_is_exact
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import ConfigError, OptimConfig
from transformer_xl.training.lamb import Lamb
from transformer_xl.training.optim import build_optimizer

B1, B2, EPS, LR = 0.9, 0.99, 1e-6, 0.05


def _norm(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs))


def _hand_lamb(w: list[float], grads: list[list[float]], *, wd: float, bias_correction: bool,
               max_norm: float = 10.0) -> list[list[float]]:
    """The rule of the module docstring in plain Python floats, one scalar at a time; the weights after
    every step."""
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    history = []
    for t, g in enumerate(grads, start=1):
        m = [B1 * mi + (1 - B1) * gi for mi, gi in zip(m, g)]
        v = [B2 * vi + (1 - B2) * gi * gi for vi, gi in zip(v, g)]
        mh = [mi / (1 - B1 ** t) for mi in m] if bias_correction else m
        vh = [vi / (1 - B2 ** t) for vi in v] if bias_correction else v
        u = [mi / (math.sqrt(vi) + EPS) + wd * wi for mi, vi, wi in zip(mh, vh, w)]
        phi = min(_norm(w), max_norm)
        un = _norm(u)
        ratio = 1.0 if phi == 0 or un == 0 else phi / (un + EPS)
        w = [wi - LR * ratio * ui for wi, ui in zip(w, u)]
        history.append(w)
    return history


# three tensors: a small matrix, a zero-initialised bias (weight norm 0: ratio 1), and one whose norm (20)
# is above the clamp of 10
START = {"matrix": [0.5, -1.0, 0.25, 2.0], "bias": [0.0, 0.0, 0.0], "big": [12.0, -16.0]}
GRADS = {"matrix": [[0.1, -0.2, 0.3, 0.05], [-0.4, 0.1, 0.0, 0.2], [0.3, 0.3, -0.1, -0.2]],
         "bias": [[1.0, -2.0, 0.5], [0.0, 1.0, -1.0], [2.0, 0.5, 0.5]],
         "big": [[0.5, 0.5], [-1.0, 0.25], [0.1, -0.3]]}


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_three_steps_equal_the_hand_computation(wd: float, bias_correction: bool) -> None:
    params = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in START.items()}
    opt = Lamb(params.values(), lr=LR, betas=(B1, B2), eps=EPS, weight_decay=wd, bias_correction=bias_correction)
    expected = {k: _hand_lamb(START[k], GRADS[k], wd=wd, bias_correction=bias_correction) for k in START}
    for step in range(3):
        for k, p in params.items():
            p.grad = torch.tensor(GRADS[k][step], dtype=torch.float64)
        opt.step()
        for k, p in params.items():
            assert p.tolist() == pytest.approx(expected[k][step], rel=1e-12, abs=1e-14), (k, step)
    # the trust ratio changed the step: plain Adam (ratio 1) lands elsewhere on the clamped tensor
    adam_like = _hand_lamb(START["big"], GRADS["big"], wd=wd, bias_correction=bias_correction, max_norm=1e9)
    assert params["big"].tolist() != pytest.approx(adam_like[-1], rel=1e-6)
    assert opt.state[params["matrix"]]["step"] == 3


def test_zero_norm_edge_cases() -> None:
    # zero weights: the ratio is 1, so the step is lr * u (u = m / (sqrt(v) + eps), with v = (1 - b2) g^2)
    zero = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    # zero gradient and no decay: the update is 0, its norm is 0, the ratio is 1 and nothing moves (no NaN)
    still = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = Lamb([zero, still], lr=LR, betas=(B1, B2), eps=EPS)
    zero.grad = torch.tensor([2.0, -1.0], dtype=torch.float64)
    still.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    u = [(1 - B1) * g / (math.sqrt(1 - B2) * abs(g) + EPS) for g in (2.0, -1.0)]
    assert zero.tolist() == pytest.approx([-LR * x for x in u], rel=1e-12)
    assert still.tolist() == [3.0, 4.0]
    # a parameter without a gradient is skipped and gets no state
    spare = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [spare]})
    opt.step()
    assert spare.tolist() == [1.0, 1.0] and spare not in opt.state


def test_group_without_trust_ratio_takes_adam_steps() -> None:
    w = torch.nn.Parameter(torch.tensor([12.0, -16.0], dtype=torch.float64))
    opt = Lamb([{"params": [w], "trust_ratio": False}], lr=LR, betas=(B1, B2), eps=EPS)
    for g in GRADS["big"]:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = _hand_lamb(START["big"], GRADS["big"], wd=0.0, bias_correction=False, max_norm=1e9)[-1]
    # with an unclamped weight norm the hand rule's ratio is ||w|| / ||u||, not 1: compute plain steps instead
    plain, m, v = list(START["big"]), [0.0, 0.0], [0.0, 0.0]
    for g in GRADS["big"]:
        m = [B1 * a + (1 - B1) * b for a, b in zip(m, g)]
        v = [B2 * a + (1 - B2) * b * b for a, b in zip(v, g)]
        plain = [p - LR * a / (math.sqrt(b) + EPS) for p, a, b in zip(plain, m, v)]
    assert w.tolist() == pytest.approx(plain, rel=1e-12)
    assert w.tolist() != pytest.approx(expected, rel=1e-6)


def test_state_dict_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    copy = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = Lamb(model.parameters(), lr=0.01, weight_decay=0.01)
    x = torch.randn(16, 4)

    def step(m: torch.nn.Module, o: torch.optim.Optimizer) -> None:
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()

    for _ in range(2):
        step(model, opt)
    copy.load_state_dict(model.state_dict())
    restored = Lamb(copy.parameters(), lr=0.01, weight_decay=0.01)
    buffer = io.BytesIO()  # through bytes, as a checkpoint goes (a live state dict shares its tensors)
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(3):
        step(model, opt)
        step(copy, restored)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), copy.parameters()))


def test_build_optimizer_keeps_no_decay_group_at_zero() -> None:
    model = TransformerXLLM(ModelConfig(n_token=40, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32))
    opt = build_optimizer(model, OptimConfig(optimizer="lamb", weight_decay=0.1, eps=1e-6, lr=0.01))
    assert isinstance(opt, Lamb)
    decay = {g["group"]: g["weight_decay"] for g in opt.param_groups}
    assert decay == {"decay": 0.1, "no_decay": 0.0}
    assert all(g["eps"] == 1e-6 and g["trust_ratio"] and not g["bias_correction"] for g in opt.param_groups)
    with pytest.raises(ConfigError, match="optim.optimizer must be one of"):
        OptimConfig(optimizer="lars")


@pytest.mark.slow
def test_resume_with_lamb_equals_uninterrupted_run(tmp_path: Path) -> None:
    assert_resume_is_exact(tmp_path, OptimConfig(optimizer="lamb", lr=0.01, eps=1e-6, weight_decay=0.01,
                                                 warmup_steps=1, decay_steps=6))


@pytest.mark.slow
def test_txl_train_with_lamb_learns(tmp_path: Path) -> None:
    # a tiny model's weights have small norms, so LAMB's trust ratio keeps steps small: it needs a larger
    # rate than Adam here (lr 0.01, NVIDIA's for a 16-layer model, barely moves it in 30 steps)
    assert_cli_run_learns(tmp_path, "lamb", "--optim.lr", "0.1", "--optim.eps", "1e-6", "--optim.warmup_steps", "4")
