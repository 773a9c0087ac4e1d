"""Input noising (train.input_noise): unigram draws replace inputs at the given rate, targets stay the
true next tokens, and a noised run is deterministic and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.tiny import tiny_data, tiny_run_config
from transformer_xl.config import TrainConfig, TransformerXLError
from transformer_xl.runner import SegmentRunner
from transformer_xl.training import loop, train
from transformer_xl.training.noise import noise_inputs, unigram_distribution


def test_unigram_distribution_is_the_token_frequencies() -> None:
    probs = unigram_distribution(np.array([3, 3, 1, 3]), 6, torch.device("cpu"))
    assert probs.shape == (6,) and torch.allclose(probs, torch.tensor([0, 0.25, 0, 0.75, 0, 0]))
    assert torch.allclose(unigram_distribution(np.array([], dtype=np.int64), 4, torch.device("cpu")),
                          torch.full((4,), 0.25))


def test_noise_replaces_at_the_rate_with_unigram_draws_only() -> None:
    torch.manual_seed(0)
    x = torch.zeros(64, 512, dtype=torch.long)
    unigram = torch.tensor([0.0, 0.5, 0.0, 0.5])  # token 0 is never drawn: every replacement shows
    noised = noise_inputs(x, 0.2, unigram)
    assert noised.dtype == x.dtype and noised.shape == x.shape and torch.equal(x, torch.zeros_like(x))
    changed = noised != 0
    assert abs(changed.float().mean().item() - 0.2) < 0.01  # 32,768 draws: the sd is 0.0022
    assert set(noised[changed].unique().tolist()) == {1, 3}
    assert noise_inputs(x, 0.0, unigram) is x


@pytest.mark.parametrize("value", [-0.1, 1.0, 2.0])
def test_input_noise_outside_0_1_is_refused(value: float) -> None:
    with pytest.raises(TransformerXLError, match="input_noise"):
        TrainConfig(input_noise=value)


def test_training_noises_inputs_but_not_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (clean inputs, noised inputs) of each step
    seen_targets: list[torch.Tensor] = []
    real_noise, real_step = loop.noise_inputs, SegmentRunner.step

    def record_noise(x, p, unigram):
        out = real_noise(x, p, unigram)
        seen.append((x.clone(), out.clone()))
        return out

    def record_step(self, x, targets=None, **kw):
        seen_targets.append(targets.clone())
        return real_step(self, x, targets=targets, **kw)

    monkeypatch.setattr(loop, "noise_inputs", record_noise)
    monkeypatch.setattr(SegmentRunner, "step", record_step)
    train(tiny_run_config(max_steps=3, input_noise=0.5, eval_every=0, grad_accum=1), data=tiny_data(), out=tmp_path)
    assert len(seen) == 3  # then the runs of the final validation, on clean text
    for (clean, noised), y in zip(seen, seen_targets[:3]):
        assert torch.equal(y[:, :-1], clean[:, 1:])  # targets: the clean next tokens
        assert 0.2 < (noised != clean).float().mean().item() < 0.8


@pytest.mark.slow
def test_noised_run_is_deterministic_differs_from_clean_and_resumes_exactly(tmp_path: Path) -> None:
    data = tiny_data()
    noisy = dict(input_noise=0.3)
    a = train(tiny_run_config(max_steps=6, **noisy), data=data, out=tmp_path / "a")
    b = train(tiny_run_config(max_steps=6, **noisy), data=data, out=tmp_path / "b")
    clean = train(tiny_run_config(max_steps=6), data=data, out=tmp_path / "clean")
    assert a.losses == b.losses and a.losses != clean.losses
    first = train(tiny_run_config(max_steps=3, **noisy), data=data, out=tmp_path / "split")
    second = train(tiny_run_config(max_steps=6, **noisy), data=data, out=tmp_path / "split", resume=True)
    assert first.losses + second.losses == a.losses  # exact: the noise draws come from the saved RNG
