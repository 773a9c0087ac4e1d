"""The learning rate is a pure function of the step."""

from __future__ import annotations

import math

import pytest

from transformer_xl.config import ConfigError, OptimConfig
from transformer_xl.training.schedule import learning_rate


def test_linear_warmup_then_cosine_to_the_floor() -> None:
    optim = OptimConfig(lr=1.0, lr_min=0.1, warmup_steps=4)
    lrs = [learning_rate(s, optim, max_steps=14) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0
    assert lrs[9] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14:] == [pytest.approx(0.1)] * 6  # held at the floor after the decay
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_inverse_sqrt_and_constant() -> None:
    inv = OptimConfig(lr=1.0, schedule="inv_sqrt", warmup_steps=4)
    assert learning_rate(3, inv, max_steps=100) == 1.0
    assert learning_rate(15, inv, max_steps=100) == pytest.approx(math.sqrt(4 / 16))
    const = OptimConfig(lr=0.5, schedule="constant")
    assert {learning_rate(s, const, max_steps=10) for s in range(30)} == {0.5}


def test_decay_steps_and_validation() -> None:
    optim = OptimConfig(lr=1.0, decay_steps=10)
    assert learning_rate(10, optim, max_steps=1000) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="schedule"):
        OptimConfig(schedule="linear")
    with pytest.raises(ConfigError, match="lr_min"):
        OptimConfig(lr=1e-3, lr_min=1.0)


def test_time_clock_decays_over_the_seconds_and_ramps_over_the_warmup_steps() -> None:
    optim = OptimConfig(lr=1.0, lr_min=0.1, warmup_steps=4, decay_clock="time")
    # the warmup (in steps) multiplies the cosine (in seconds): continuous, whatever the machine's speed
    assert learning_rate(0, optim, max_steps=10, seconds=0.0, max_time=60.0) == pytest.approx(0.25)
    assert learning_rate(3, optim, max_steps=10, seconds=0.0, max_time=60.0) == pytest.approx(1.0)
    assert learning_rate(50, optim, max_steps=10, seconds=30.0, max_time=60.0) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    # the step count no longer matters after the warmup; the floor is reached when the time is up
    assert learning_rate(5, optim, max_steps=10, seconds=60.0, max_time=60.0) == pytest.approx(0.1)
    assert learning_rate(10 ** 6, optim, max_steps=10, seconds=90.0, max_time=60.0) == pytest.approx(0.1)
    lrs = [learning_rate(s, optim, max_steps=10, seconds=s * 0.5, max_time=60.0) for s in range(4, 130)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_time_clock_validation() -> None:
    from transformer_xl.config import ModelConfig, RunConfig, TrainConfig

    with pytest.raises(ConfigError, match="decay_clock"):
        OptimConfig(decay_clock="epochs")
    with pytest.raises(ConfigError, match="cosine"):
        OptimConfig(decay_clock="time", schedule="inv_sqrt")
    with pytest.raises(ConfigError, match="set train.max_time"):
        RunConfig(model=ModelConfig(n_token=10), optim=OptimConfig(decay_clock="time"))
    RunConfig(model=ModelConfig(n_token=10), optim=OptimConfig(decay_clock="time"), train=TrainConfig(max_time=5))
