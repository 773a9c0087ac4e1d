"""Reports always hold the numbers; plots need matplotlib and say which extra to install; speed rows."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.analysis.context import ContextLosses, PositionLosses
from transformer_xl.analysis.plots import (
    have_matplotlib,
    plot_gain_curves,
    plot_loss_by_position,
    position_report,
    recl_report,
)
from transformer_xl.analysis.recl import recl
from transformer_xl.analysis.speed import eval_speed, speed_table
from transformer_xl.config import Span, TransformerXLError


def _result():
    curves = {"xl": {100: np.full(8, 3.0), 200: np.full(8, 2.8)}, "vanilla": {100: np.full(8, 3.1), 200: np.full(8, 3.1)}}
    return recl(curves, skip=0), [ContextLosses(name=n, method="memory", contexts=[100, 200],
                                                losses=np.stack([v[100], v[200]]), effective=[100, 200])
                                  for n, v in curves.items()]


def test_recl_report_holds_the_table_and_means() -> None:
    result, curves = _result()
    text = recl_report(result, curves)
    assert "| xl | >= 200 | >= 200 | >= 200 |" in text and "| vanilla | 100 | 100 | 100 |" in text
    assert "| xl | 3.0000 | 2.8000 |" in text


def test_position_report() -> None:
    losses = PositionLosses(seg_len=8, mem_len=8, with_memory=np.full(8, 2.0), without_memory=np.linspace(4, 2, 8),
                            n_segments=3)
    assert "| without memory | 3.0000 | 4.0000 | 2.0000 |" in position_report(losses)


@pytest.mark.skipif(have_matplotlib(), reason="checks the message shown when matplotlib is missing")
def test_plots_without_matplotlib_name_the_extra(tmp_path) -> None:
    result, _ = _result()
    with pytest.raises(TransformerXLError, match="matplotlib"):
        plot_gain_curves(result, tmp_path / "g.png")


@pytest.mark.skipif(not have_matplotlib(), reason="matplotlib not installed")
def test_plots_write_png(tmp_path) -> None:
    result, _ = _result()
    assert plot_gain_curves(result, tmp_path / "g.png").stat().st_size > 0
    losses = PositionLosses(seg_len=4, mem_len=4, with_memory=np.ones(4), without_memory=np.ones(4), n_segments=1)
    assert plot_loss_by_position(losses, tmp_path / "p.png").stat().st_size > 0


def test_eval_speed_rows() -> None:
    model = TransformerXLLM(ModelConfig(n_token=20, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32,
                                        dropout=0.0, seg_len=4, mem_len=4)).eval()
    tokens = np.random.default_rng(0).integers(0, 20, 200)
    rows = eval_speed(model, tokens, [8, 16], span=Span(seg_len=4, mem_len=4), xl_tokens=32, vanilla_tokens=8)
    assert [r.attn_len for r in rows] == [8, 16]
    assert all(r.xl_ms_per_token > 0 and r.vanilla_ms_per_token > 0 for r in rows)
    assert "| 16 |" in speed_table(rows)
    with pytest.raises(TransformerXLError):
        eval_speed(model, tokens[:20], [16], xl_tokens=32)
