"""Figures (matplotlib PNG, an optional extra) and Markdown reports of the analyses.

The numbers are always written (JSON / CSV / Markdown); a PNG only when matplotlib is installed, and
asking for one without it raises an error that names the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import TransformerXLError
from .context import ContextLosses, PositionLosses
from .recl import RECLResult

__all__ = ["have_matplotlib", "plot_accuracy_by_distance", "plot_context_curves", "plot_gain_curves",
           "plot_loss_by_position", "position_report", "recl_report"]

_EXTRA = ".venv/bin/pip install -e '.[plot]' in a git clone (pip install 'transformer-xl[plot]' otherwise)"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise TransformerXLError(f"plots need matplotlib: {_EXTRA}") from None
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_gain_curves(result: RECLResult, path: str | Path, *, r: float | None = None) -> Path:
    """Relative gain g_i(c, c + Delta) against c for each model (Appendix C, Figure 3), threshold dashed."""
    plt = _pyplot()
    r = result.ratios[0] if r is None else r
    fig, ax = plt.subplots(figsize=(6, 4))
    for curve in result.curves:
        if curve.r == r:
            ax.plot([c for c, _ in curve.pairs], curve.gains, marker="o", label=curve.name)
    ax.axhline(result.threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {result.threshold}")
    ax.set_xlabel("context c (gain of c + %d over c)" % result.step)
    ax.set_ylabel("relative gain g(c, c + Δ)")
    ax.set_title(f"RECL gains, r = {r}")
    ax.legend()
    return _save(fig, path)


def plot_context_curves(curves: Sequence[ContextLosses], path: str | Path) -> Path:
    """Mean loss against context length for each model (Appendix C, Figure 4)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for curve in curves:
        means = curve.mean()
        ax.plot(list(means), list(means.values()), marker="o", label=curve.name)
    ax.set_xlabel("context length c")
    ax.set_ylabel("mean loss (nats per token)")
    ax.legend()
    return _save(fig, path)


def plot_loss_by_position(losses: PositionLosses, path: str | Path) -> Path:
    """Loss at each position of the segment, with and without memory (context fragmentation)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    positions = range(losses.seg_len)
    ax.plot(positions, losses.without_memory, label="without memory (fixed segments)")
    ax.plot(positions, losses.with_memory, label=f"with memory (mem_len {losses.mem_len})")
    ax.set_xlabel("position in the segment")
    ax.set_ylabel("mean loss (nats per token)")
    ax.legend()
    return _save(fig, path)


def plot_accuracy_by_distance(curves: Mapping[str, Mapping[int, float]], path: str | Path) -> Path:
    """Recall accuracy of synthetic tasks against the distance d of the answer."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(list(curve), list(curve.values()), marker="o", label=name)
    ax.set_xlabel("distance d of the answer")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend()
    return _save(fig, path)


# Markdown reports ----------------------------------------------------------------------------------
def recl_report(result: RECLResult, curves: Sequence[ContextLosses] = (), *, title: str = "RECL") -> str:
    """Markdown: the RECL table, the mean loss at each context, and how RECL was computed."""
    lines = [f"# {title}", "", result.table(), "",
             f"Relative Effective Context Length (Dai et al. 2019, Appendix C): contexts {result.contexts}, "
             f"step Δ = {result.step}, threshold {result.threshold}. The baseline is the best loss of the group "
             "at the shorter context; '>= c' means the gain still passed the threshold at the longest context "
             "evaluated.", ""]
    if curves:
        lines += ["## Mean loss by context", "",
                  "| Model | " + " | ".join(f"c = {c}" for c in curves[0].contexts) + " |",
                  "|---|" + "---:|" * len(curves[0].contexts)]
        for curve in curves:
            lines.append(f"| {curve.name} | " + " | ".join(f"{v:.4f}" for v in curve.mean().values()) + " |")
        lines.append("")
    return "\n".join(lines)


def position_report(losses: PositionLosses, *, title: str = "Loss by position in the segment") -> str:
    """Markdown: how much the first positions of a segment lose without memory."""
    head = max(1, losses.seg_len // 8)
    first_without = float(losses.without_memory[:head].mean())
    first_with = float(losses.with_memory[:head].mean())
    return "\n".join([
        f"# {title}", "",
        f"Span with memory: {losses.span.describe()} (without memory: mem_len 0); "
        f"{losses.n_segments} segments averaged.", "",
        "| | mean loss | first %d positions | last position |" % head, "|---|---:|---:|---:|",
        f"| without memory | {losses.without_memory.mean():.4f} | {first_without:.4f} | "
        f"{losses.without_memory[-1]:.4f} |",
        f"| with memory | {losses.with_memory.mean():.4f} | {first_with:.4f} | {losses.with_memory[-1]:.4f} |", "",
        "Without memory the first tokens of every segment are predicted from almost no context (context "
        "fragmentation); with memory they see the previous segment.", ""])
