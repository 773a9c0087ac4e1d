"""Context grids and the files an analysis leaves behind (JSON, CSV, Markdown, PNGs when matplotlib is
installed). ``txl recl``, ``txl ablate`` and ``txl analyze`` write through these; so can a script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..config import Span, TransformerXLError
from .context import ContextLosses, PositionLosses
from .plots import (
    have_matplotlib,
    plot_context_curves,
    plot_gain_curves,
    plot_loss_by_position,
    position_report,
    recl_report,
)
from .recl import RECLResult
from .speed import SpeedRow, speed_table

__all__ = ["context_grid", "context_record", "context_span_text", "context_table", "write_context_outputs",
           "write_position_outputs", "write_recl_outputs", "write_speed_outputs"]


def context_grid(seg_lens: Sequence[int], *, contexts: Sequence[int] | None = None, start: int | None = None,
                 step: int | None = None, max_context: int | None = None) -> list[int]:
    """The contexts c to score: ``contexts`` itself (sorted, deduplicated), or start, start + step, ...,
    max_context. Defaults: step the smallest of ``seg_lens`` (the models' segment lengths), start one
    step, max_context start + 5 steps."""
    if contexts:
        grid = sorted({int(c) for c in contexts})
    else:
        step = step or min(seg_lens)
        start = start or step
        stop = max_context or start + 5 * step
        if step <= 0 or start < 0 or stop < start:
            raise TransformerXLError(f"need --step > 0 and 0 <= --start <= --max-context; got {step}, {start}, {stop}")
        grid = list(range(start, stop + 1, step))
    if len(grid) < 2 or grid[0] < 1:
        raise TransformerXLError(f"need at least two positive context lengths, got {grid}")
    return grid


def context_span_text(method: str, span: Span) -> str:
    """How a loss-by-context pass reads the tokens, in one line."""
    if method == "window":
        return "window method: a fresh window of c tokens per prediction, no memory"
    return (f"memory method: span {span.describe()}, run at each context c with mem_len c, same_length on and "
            "segments of at most c tokens")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_recl_outputs(out: str | Path, result: RECLResult, curves: Sequence[ContextLosses], *,
                       title: str = "RECL") -> list[Path]:
    """recl.json, gains.csv, context_means.json, report.md, and PNGs when matplotlib is installed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["model,r,c,c_prime,gain"]
    for curve in result.curves:
        rows += [f"{curve.name},{curve.r},{c},{c2},{g:.6g}" for (c, c2), g in zip(curve.pairs, curve.gains)]
    means = {c.name: {"method": c.method, "effective": c.effective, "mean_loss": c.mean()} for c in curves}
    written = [_write(out / "recl.json", json.dumps(result.to_dict(), indent=1) + "\n"),
               _write(out / "gains.csv", "\n".join(rows) + "\n"),
               _write(out / "context_means.json", json.dumps(means, indent=1) + "\n"),
               _write(out / "report.md", recl_report(result, curves, title=title))]
    if have_matplotlib():
        for r in result.ratios:
            written.append(plot_gain_curves(result, out / f"gains_r{r}.png", r=r))
        written.append(plot_context_curves(curves, out / "loss_by_context.png"))
    return written


def context_record(curve: ContextLosses) -> dict[str, Any]:
    """The numbers of one model's loss-by-context curve, as JSON-ready values."""
    return {"name": curve.name, "method": curve.method, "contexts": curve.contexts, "effective": curve.effective,
            "mean_loss": {str(c): v for c, v in curve.mean().items()}, "n_tokens": int(curve.losses.shape[1])}


def context_table(curve: ContextLosses) -> str:
    """Markdown: mean loss at each context."""
    lines = ["| context c | mean loss |", "|---:|---:|"]
    return "\n".join(lines + [f"| {c} | {v:.4f} |" for c, v in curve.mean().items()])


def write_context_outputs(out: str | Path, curve: ContextLosses, *, span_text: str = "") -> list[Path]:
    """context.json, report.md (and loss_by_context.png with matplotlib) of one model's curve."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = f"# Loss by context ({curve.method})\n\n" + (f"Span: {span_text}.\n\n" if span_text else "")
    written = [_write(out / "context.json", json.dumps(context_record(curve), indent=1) + "\n"),
               _write(out / "report.md", header + context_table(curve) + "\n")]
    if have_matplotlib():
        written.append(plot_context_curves([curve], out / "loss_by_context.png"))
    return written


def write_position_outputs(out: str | Path, losses: PositionLosses) -> list[Path]:
    """position.json, position.csv, report.md (and position.png with matplotlib)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write(out / "position.json", json.dumps(losses.to_dict(), indent=1) + "\n"),
               _write(out / "position.csv", losses.to_csv()),
               _write(out / "report.md", position_report(losses))]
    if have_matplotlib():
        written.append(plot_loss_by_position(losses, out / "position.png"))
    return written


def write_speed_outputs(out: str | Path, rows: Sequence[SpeedRow], *, device: Any, span_text: str = "") -> list[Path]:
    """speed.json and report.md of an evaluation-speed table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    note = f"XL span: {span_text} (mem_len = attention length, same_length on).\n\n" if span_text else ""
    return [_write(out / "speed.json", json.dumps([r.to_dict() for r in rows], indent=1) + "\n"),
            _write(out / "report.md", f"# Evaluation speed ({device})\n\n{note}{speed_table(rows)}\n")]
