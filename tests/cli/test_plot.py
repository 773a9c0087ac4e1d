"""`txl plot`: loss curves of runs to a PNG (matplotlib is an optional extra: skipped without it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from transformer_xl.cli import main
from transformer_xl.cli.plot import read_curves

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_read_curves_of_a_trained_run(trained_run: Path) -> None:
    curves = read_curves(trained_run)
    assert [s for s, _ in curves["train"]] == [1, 2, 3, 4]  # log_every 1, 4 steps
    assert [s for s, _ in curves["valid"]] == [2, 4]  # eval_every 2
    assert curves["tokens_per_step"] == 4 * 8  # batch 4 x seg_len 8 from run.json


def test_torn_rows_and_missing_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_curves(tmp_path)["train"] == [(1, 2.0)] and read_curves(tmp_path)["tokens_per_step"] is None
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


@pytest.mark.skipif(HAVE_MATPLOTLIB, reason="checks the message shown when matplotlib is missing")
def test_without_matplotlib_the_error_says_how_to_install(trained_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["plot", str(trained_run), "--out", str(tmp_path / "x.png")]) == 2
    assert ".venv/bin/pip install -e '.[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (the plot extra) is not installed")
def test_plot_overlays_runs_to_a_png(trained_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    rows = [{"step": s, "loss": 4.0 - s / 10} for s in range(1, 6)] + [{"step": 5, "valid_loss": 3.7}]
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cmp.png"
    assert main(["plot", str(trained_run), str(other), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
