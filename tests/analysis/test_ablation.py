"""The Table 6 rows as library functions: row configs, parameter matching, grids, the report table."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_xl import ModelConfig
from transformer_xl.analysis import ContextLosses, context_grid
from transformer_xl.analysis.ablation import (
    ABLATION_ROWS,
    ablation_table,
    add_recl,
    check_grid,
    count_parameters,
    equal_parameters,
    row_config,
    row_configs,
    row_summary,
    train_attention,
)
from transformer_xl.analysis.recl import recl
from transformer_xl.config import TransformerXLError

BASE = ModelConfig(n_token=40, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0, seg_len=8,
                   mem_len=8, same_length=True)


def test_rows_set_attention_and_recurrence() -> None:
    assert list(ABLATION_ROWS) == ["xl", "shaw", "no-recurrence", "vanilla"]
    shaw, flat, vanilla = (row_config(BASE, r) for r in ("shaw", "no-recurrence", "vanilla"))
    assert (shaw.attn_type, shaw.mem_len, shaw.same_length) == ("shaw", 8, True)
    assert (flat.attn_type, flat.mem_len, flat.same_length) == ("xl", 0, False)
    assert (vanilla.attn_type, vanilla.mem_len) == ("al-rfou", 0)
    assert train_attention(shaw) == 8 and train_attention(vanilla) == 8
    assert train_attention(BASE.replace(mem_len=24)) == 24
    with pytest.raises(TransformerXLError, match="unknown ablation row"):
        row_config(BASE, "nope")


def test_rows_after_the_first_match_its_parameter_count() -> None:
    configs = row_configs(BASE)
    target = count_parameters(configs["xl"])
    assert configs["xl"].d_inner == 32  # the first row is the reference, unchanged
    for config in configs.values():  # closest d_inner: within half a unit (d_model + 1 + d_model)
        assert abs(count_parameters(config) - target) <= (2 * 16 + 1) // 2 + 1
    assert configs["vanilla"].d_inner != 32  # the learned position table had to be paid for
    bigger = equal_parameters(BASE, count_parameters(BASE.replace(d_inner=50)))
    assert bigger.d_inner == 50
    with pytest.raises(TransformerXLError, match="mem_len"):
        row_configs(BASE.replace(mem_len=0))
    assert list(row_configs(BASE.replace(mem_len=0), ["no-recurrence", "vanilla"])) == ["no-recurrence", "vanilla"]
    with pytest.raises(TransformerXLError, match="repeat"):
        row_configs(BASE, ["xl", "xl"])


def test_grid_defaults_and_checks() -> None:
    assert context_grid([8, 16]) == [8, 16, 24, 32, 40, 48]
    assert context_grid([8], start=4, step=4, max_context=12) == [4, 8, 12]
    assert context_grid([8], contexts=[16, 8, 16]) == [8, 16]
    with pytest.raises(TransformerXLError):
        context_grid([8], contexts=[8])
    configs = row_configs(BASE, ["xl", "vanilla"])
    check_grid(configs, [8, 16], n_tokens=100)
    with pytest.raises(TransformerXLError, match="not among the contexts"):
        check_grid(configs, [4, 12], n_tokens=100)
    with pytest.raises(TransformerXLError, match="max-tokens"):
        check_grid(configs, [8, 16], n_tokens=16)


def test_summaries_and_table() -> None:
    losses = {"xl": [2.0, 1.5, 1.4], "vanilla": [2.2, 2.2, 2.2]}
    curves = [ContextLosses(name=n, method="memory", contexts=[8, 16, 24], effective=[8, 16, 24],
                            losses=np.stack([np.full(30, v) for v in values])) for n, values in losses.items()]
    configs = row_configs(BASE, ["xl", "vanilla"])
    rows = [row_summary(c.name, configs[c.name], c, params=1000) for c in curves]
    assert rows[0]["best_attn_len"] == 24 and rows[0]["loss_at_train_len"] == pytest.approx(2.0)
    assert rows[1]["best_attn_len"] == 8 and rows[1]["recurrence"] is False
    result = recl({c.name: c.as_mapping() for c in curves}, skip=0, ratios=(1.0,))
    add_recl(rows, result)
    assert rows[0]["recl"] == {"1.0": 24} and rows[0]["recl_capped"] == {"1.0": True}
    table = ablation_table(rows, result.ratios, "char")
    assert f"| xl | yes | xl | 1,000 | {2.0 / np.log(2):.4f} (8) | {1.4 / np.log(2):.4f} | 24 | >= 24 |" in table
    assert f"{np.exp(2.2):.2f} (8)" in ablation_table(rows, result.ratios, "word")
