"""Relative Effective Context Length (RECL), exactly as Appendix C of the paper defines it.

Notation of Appendix C. A model group M = {m_1 .. m_N}; l_i(c, t) is the loss of model m_i on corpus
token t when it sees the c tokens before it. For a short context c and a long one c' >= c:

    b(c, t)      = min_i l_i(c, t)                                      the group's best short-context loss
    f_i(c, c')   = 1/|T| sum_{t in T} min(b(c, t), l_i(c', t))           relative loss
    T            = the top-r fraction of tokens t with the largest b(c, t)
    g_i(c, c')   = (exp f_i(c, c) - exp f_i(c, c')) / exp f_i(c, c)       relative gain

Only improvements below the shared baseline count (the min), so a model that is weak at short context
cannot earn a gain by merely catching up with the others. RECL is found by stepping: start at c, and
while g_i(c, c + Delta) >= threshold (0.01) move to c + Delta; RECL is the c where the gain first falls
below the threshold.

Everything here is plain numpy over arrays of per-token losses, so it is testable on synthetic curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import TransformerXLError

__all__ = ["DEFAULT_RATIOS", "GainCurve", "RECLResult", "group_baseline", "recl", "recl_table",
           "relative_gain", "relative_loss", "top_r_positions"]

DEFAULT_RATIOS = (0.1, 0.5, 1.0)  # the r of the paper's Table 8
DEFAULT_THRESHOLD = 0.01  # Appendix C: stop once the relative gain is below 1%


def _as_group(losses: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    group = np.asarray(losses, dtype=np.float64)
    if group.ndim != 2 or group.shape[0] == 0 or group.shape[1] == 0:
        raise TransformerXLError(f"losses must be (N models, n tokens) with N, n > 0; got shape {group.shape}")
    return group


def group_baseline(short: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """b(c, t) = min_i l_i(c, t): the best loss of the group at the short context, per token."""
    return _as_group(short).min(axis=0)


def top_r_positions(baseline: np.ndarray, r: float) -> np.ndarray:
    """T: indices of the ceil(r * n) tokens with the largest baseline b(c, t) (the hardest ones).

    Ties are broken by corpus order (earlier token first) so the set is deterministic.
    """
    if not 0.0 < r <= 1.0:
        raise TransformerXLError(f"r must be in (0, 1], got {r!r}")
    n = len(baseline)
    k = max(1, math.ceil(r * n - 1e-9))  # the epsilon keeps 0.1 * 30 = 3.0000000000000004 from giving 4
    order = np.argsort(-np.asarray(baseline, dtype=np.float64), kind="stable")
    return np.sort(order[:k])


def relative_loss(baseline: np.ndarray, long: np.ndarray, positions: np.ndarray) -> float:
    """f_i(c, c') = mean over T of min(b(c, t), l_i(c', t))."""
    return float(np.minimum(baseline[positions], np.asarray(long, dtype=np.float64)[positions]).mean())


def relative_gain(short: Sequence[np.ndarray] | np.ndarray, long: Sequence[np.ndarray] | np.ndarray, *,
                  r: float) -> np.ndarray:
    """g_i(c, c') for every model i of the group: ``short`` holds l_i(c, .), ``long`` l_i(c', .)."""
    short, long = _as_group(short), _as_group(long)
    if short.shape != long.shape:
        raise TransformerXLError(f"short and long losses differ in shape: {short.shape} vs {long.shape}")
    baseline = group_baseline(short)
    positions = top_r_positions(baseline, r)
    # f_i(c, c) is the same for every model: min(b, l_i(c, t)) = b(c, t) because b is the group minimum.
    f_short = float(baseline[positions].mean())
    f_long = np.array([relative_loss(baseline, row, positions) for row in long])
    return (math.exp(f_short) - np.exp(f_long)) / math.exp(f_short)


@dataclass
class GainCurve:
    """g_i(c, c + Delta) of one model for every step of the context grid (Figure 3 of the paper)."""

    name: str
    r: float
    pairs: list[tuple[int, int]]  # (c, c')
    gains: list[float]


@dataclass
class RECLResult:
    """RECL of every model of a group, for each r, with the gain curves it was read from."""

    names: list[str]
    contexts: list[int]
    step: int
    threshold: float
    ratios: tuple[float, ...]
    recl: dict[float, dict[str, int]]  # r -> model name -> RECL
    capped: dict[float, dict[str, bool]]  # True where the gain still passed the threshold at the last context
    curves: list[GainCurve] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names, "contexts": self.contexts, "step": self.step, "threshold": self.threshold,
            "ratios": list(self.ratios),
            "recl": {str(r): v for r, v in self.recl.items()},
            "capped": {str(r): v for r, v in self.capped.items()},
            "curves": [{"name": c.name, "r": c.r, "pairs": [list(p) for p in c.pairs], "gains": c.gains}
                       for c in self.curves],
        }

    def table(self) -> str:
        """A Markdown table like the paper's Table 8; '>= c' where the grid ended before the gain fell."""
        lines = ["| Model | " + " | ".join(f"r = {r}" for r in self.ratios) + " |",
                 "|---|" + "---:|" * len(self.ratios)]
        for name in self.names:
            cells = [(">= " if self.capped[r][name] else "") + str(self.recl[r][name]) for r in self.ratios]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _check_grid(contexts: Sequence[int], step: int | None, start: int | None) -> tuple[list[int], int, int]:
    grid = sorted(int(c) for c in contexts)
    if len(grid) < 2 or len(set(grid)) != len(grid) or grid[0] < 0:
        raise TransformerXLError(f"need at least two distinct non-negative context lengths, got {list(contexts)}")
    if step is None:
        steps = {b - a for a, b in zip(grid, grid[1:])}
        if len(steps) != 1:
            raise TransformerXLError(f"contexts {grid} are not evenly spaced: pass the step Delta explicitly")
        step = steps.pop()
    if step <= 0:
        raise TransformerXLError(f"step Delta must be positive, got {step}")
    start = grid[0] if start is None else int(start)
    if start not in grid:
        raise TransformerXLError(f"start context {start} is not among the evaluated contexts {grid}")
    return grid, step, start


def recl(losses: Mapping[str, Mapping[int, np.ndarray]], *, ratios: Sequence[float] = DEFAULT_RATIOS,
         step: int | None = None, start: int | None = None, threshold: float = DEFAULT_THRESHOLD,
         skip: int | None = None) -> RECLResult:
    """RECL of each model of the group ``losses`` (name -> {context c: per-token losses l(c, .)}).

    Every model must be evaluated at the same contexts on the same tokens. ``step`` is Delta (default: the
    spacing of the contexts), ``start`` the initial short context (default: the smallest). ``skip`` leaves
    out the first tokens of the corpus, which cannot see c earlier tokens (default: the largest context).
    """
    if len(losses) == 0:
        raise TransformerXLError("the model group is empty")
    names = list(losses)
    contexts = sorted(int(c) for c in next(iter(losses.values())))
    for name in names:
        if sorted(int(c) for c in losses[name]) != contexts:
            raise TransformerXLError(f"model {name!r} was evaluated at contexts {sorted(losses[name])}, the "
                                     f"others at {contexts}: RECL compares a group on one grid")
    grid, step, start = _check_grid(contexts, step, start)
    skip = grid[-1] if skip is None else skip
    table: dict[int, np.ndarray] = {}
    for c in grid:
        rows = [np.asarray(losses[name][c], dtype=np.float64).reshape(-1) for name in names]
        if len({len(row) for row in rows}) != 1:
            raise TransformerXLError(f"at context {c} the models scored different numbers of tokens: "
                                     f"{[len(row) for row in rows]}")
        if skip >= len(rows[0]):
            raise TransformerXLError(f"only {len(rows[0])} tokens scored, all within the first {skip} "
                                     "(which lack full context): score more tokens")
        table[c] = np.stack(rows)[:, skip:]  # (N, n)
    if not 0 < threshold < 1:
        raise TransformerXLError(f"threshold must be in (0, 1), got {threshold}")

    result = RECLResult(names=names, contexts=grid, step=step, threshold=threshold, ratios=tuple(ratios),
                        recl={}, capped={})
    for r in ratios:
        # Gains of all models for every pair (c, c + Delta) on the grid; the search reads them in order.
        gains: dict[int, np.ndarray] = {}
        for c in grid:
            if c + step in table:
                gains[c] = relative_gain(table[c], table[c + step], r=r)
        result.recl[r], result.capped[r] = {}, {}
        for i, name in enumerate(names):
            # Appendix C, steps 1-2: from c, move to c' = c + Delta while g_i(c, c') >= threshold.
            c = start
            while c in gains and gains[c][i] >= threshold:
                c += step
            result.recl[r][name] = c
            result.capped[r][name] = c not in gains  # the grid ended before the gain fell below threshold
            pairs = sorted(gains)
            result.curves.append(GainCurve(name=name, r=r, pairs=[(p, p + step) for p in pairs],
                                           gains=[float(gains[p][i]) for p in pairs]))
    return result


def recl_table(result: RECLResult) -> str:
    """The Markdown RECL table (see :meth:`RECLResult.table`)."""
    return result.table()
