"""RECL (Appendix C) on synthetic loss curves whose answer is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transformer_xl.analysis.recl import recl, relative_gain, top_r_positions
from transformer_xl.config import TransformerXLError

GRID = [100, 200, 300, 400, 500]


def _flat(values: list[float], n: int = 10) -> dict[int, np.ndarray]:
    """A model whose every token has the same loss at each context of the grid."""
    return {c: np.full(n, v) for c, v in zip(GRID[:len(values)], values)}


def test_staircase_recl_is_where_the_gain_stops() -> None:
    group = {"A": _flat([3.0, 2.9, 2.8, 2.8, 2.8]), "B": _flat([3.0, 2.9, 2.9, 2.9, 2.9])}
    result = recl(group, skip=0)
    for r in (0.1, 0.5, 1.0):
        assert result.recl[r] == {"A": 300, "B": 200}
        assert result.capped[r] == {"A": False, "B": False}
    curve = next(c for c in result.curves if c.name == "A" and c.r == 0.1)
    assert curve.pairs == [(100, 200), (200, 300), (300, 400), (400, 500)]
    assert curve.gains[0] == pytest.approx(1 - math.exp(-0.1))
    assert curve.gains[2] == pytest.approx(0.0)


def test_baseline_is_the_group_best_so_catching_up_earns_no_gain() -> None:
    # B drops a whole nat from 100 to 200 tokens, but only to A's short-context loss: relative to the
    # group's baseline b(100, t) = 2.0 it gains nothing, while A's small gain below the baseline counts.
    group = {"A": _flat([2.0, 1.95, 1.95]), "B": _flat([3.0, 2.0, 2.0])}
    result = recl(group, skip=0)
    assert result.recl[1.0] == {"A": 200, "B": 100}
    gains = relative_gain([group["A"][100], group["B"][100]], [group["A"][200], group["B"][200]], r=1.0)
    np.testing.assert_allclose(gains, [1 - math.exp(-0.05), 0.0], atol=1e-12)


def test_min_clipping_counts_only_losses_below_the_baseline() -> None:
    short = np.array([[2.0, 2.0]])
    long = np.array([[1.0, 5.0]])  # better on one token, much worse on the other
    gain = relative_gain(short, long, r=1.0)[0]
    # with min(b, l): f = (1 + 2) / 2 = 1.5 against f(c, c) = 2.0
    assert gain == pytest.approx(1 - math.exp(-0.5))
    unclipped = 1 - math.exp(long.mean() - short.mean())
    assert unclipped < 0 < gain


def test_top_r_selects_the_hardest_tokens_with_ties_in_corpus_order() -> None:
    baseline = np.array([1.0, 3.0, 3.0, 3.0, 0.5])
    np.testing.assert_array_equal(top_r_positions(baseline, 0.4), [1, 2])  # 3 tie for 2 places: earliest win
    np.testing.assert_array_equal(top_r_positions(baseline, 1.0), [0, 1, 2, 3, 4])
    assert len(top_r_positions(np.zeros(30), 0.1)) == 3  # ceil(0.1 * 30) without float overshoot
    assert len(top_r_positions(np.zeros(7), 0.1)) == 1
    with pytest.raises(TransformerXLError):
        top_r_positions(baseline, 0.0)


def test_hard_token_gains_give_a_longer_recl_at_small_r() -> None:
    # One hard token out of ten improves by 0.05 nats per step up to 400; the easy ones never change.
    curve = {}
    for k, c in enumerate(GRID):
        losses = np.ones(10)
        losses[3] = 5.0 - 0.05 * min(k, 3)
        curve[c] = losses
    result = recl({"M": curve}, skip=0)
    assert result.recl[0.1]["M"] == 400  # T = {the hard token}: gain 1 - e^-0.05 ~ 4.9% per step
    assert result.recl[0.5]["M"] == 100  # T = 5 tokens: 1 - e^-0.01 ~ 0.995% < 1%
    assert result.recl[1.0]["M"] == 100


def test_identical_models_tie() -> None:
    curve = _flat([3.0, 2.8, 2.7, 2.7, 2.7])
    result = recl({"A": curve, "B": {c: v.copy() for c, v in curve.items()}}, skip=0)
    for r in result.ratios:
        assert result.recl[r]["A"] == result.recl[r]["B"] == 300
    gains = relative_gain([curve[100], curve[100]], [curve[200], curve[200]], r=0.5)
    assert gains[0] == gains[1] > 0


def test_gain_equal_to_the_threshold_continues() -> None:
    group = {"A": _flat([3.0, 2.9, 2.9])}
    gain = float(relative_gain([group["A"][100]], [group["A"][200]], r=1.0)[0])
    assert recl(group, skip=0, threshold=gain).recl[1.0]["A"] == 200  # g >= threshold: step on
    assert recl(group, skip=0, threshold=gain * (1 + 1e-9)).recl[1.0]["A"] == 100


def test_grid_end_is_reported_as_a_lower_bound() -> None:
    result = recl({"A": _flat([3.0, 2.5, 2.0])}, skip=0, ratios=(1.0,))
    assert result.recl[1.0]["A"] == 300 and result.capped[1.0]["A"]
    assert "| A | >= 300 |" in result.table()


def test_default_skip_leaves_out_tokens_without_full_context() -> None:
    n = 600
    short, long = np.full(n, 2.0), np.full(n, 2.0)
    long[:200] = 0.0  # a large gain, but only on tokens that cannot see 200 earlier tokens
    result = recl({"A": {100: short, 200: long}}, ratios=(1.0,))
    assert result.recl[1.0]["A"] == 100
    assert recl({"A": {100: short, 200: long}}, ratios=(1.0,), skip=0).recl[1.0]["A"] == 200


def test_start_and_step() -> None:
    group = {"A": _flat([3.0, 2.9, 2.8, 2.7, 2.7])}
    assert recl(group, skip=0, start=200).recl[0.1]["A"] == 400
    assert recl(group, skip=0, step=200).recl[0.1]["A"] == 500  # pairs (100, 300), (300, 500)


@pytest.mark.parametrize("group,message", [
    ({}, "empty"),
    ({"A": _flat([3.0, 2.9]), "B": _flat([3.0, 2.9, 2.8])}, "same"),
    ({"A": {100: np.ones(5), 150: np.ones(5), 300: np.ones(5)}}, "evenly spaced"),
    ({"A": {100: np.ones(5), 200: np.ones(4)}}, "shape"),
])
def test_user_errors(group: dict, message: str) -> None:
    with pytest.raises(TransformerXLError):
        recl(group, skip=0)
