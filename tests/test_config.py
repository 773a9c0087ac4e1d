"""ModelConfig validation, serialisation and presets."""

from __future__ import annotations

import pytest

from transformer_xl import PRESET_NAMES, ConfigError, ModelConfig, Span, TransformerXLError, preset_eval_span


@pytest.mark.parametrize("field,value,fragment", [
    ("n_layer", 0, "n_layer"),
    ("d_model", -4, "d_model"),
    ("mem_len", -1, "mem_len"),
    ("dropout", 1.5, "dropout"),
    ("attn_type", "bogus", "attn_type"),
    ("cutoffs", (30, 10), "cutoffs"),
    ("cutoffs", (10, 100), "cutoffs"),
    ("div_val", 0, "div_val"),
    ("tie_projs", (True, True), "tie_projs"),
])
def test_invalid_values_are_rejected_with_the_value(field, value, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        ModelConfig(n_token=50, **{field: value})
    assert isinstance(info.value, TransformerXLError)
    assert str(list(value) if isinstance(value, tuple) else value) in str(info.value)


def test_defaults_are_filled():
    config = ModelConfig(n_token=100, d_model=64, cutoffs=[20, 50])
    assert config.d_embed == 64 and config.cutoffs == (20, 50)
    assert config.tie_projs == (False, True, True)


def test_json_round_trip(tmp_path):
    config = ModelConfig.preset("wt103-base")
    config.save_json(tmp_path / "config.json")
    assert ModelConfig.load_json(tmp_path / "config.json") == config


def test_unknown_fields_and_presets_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="n_layers"):
        ModelConfig.from_dict({"n_token": 5, "n_layers": 2})
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.preset("gpt-9")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.load_json(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.load_json(tmp_path / "missing.json")


def test_every_preset_builds_and_has_an_eval_span():
    for name in PRESET_NAMES:
        config = ModelConfig.preset(name)
        span = preset_eval_span(name)
        assert config.n_head * config.d_head > 0 and span.mem_len >= config.mem_len
    assert ModelConfig.preset("tiny", n_token=77).n_token == 77


def test_span_validates_and_replaces_only_given_fields():
    span = ModelConfig.preset("tiny").train_span
    assert span == Span(seg_len=32, mem_len=32, clamp_len=-1, same_length=False)
    longer = span.replace(mem_len=640, clamp_len=None)
    assert (longer.mem_len, longer.clamp_len, longer.seg_len) == (640, -1, 32)
    assert "mem_len 640" in longer.describe()
    for bad in (dict(seg_len=0), dict(mem_len=-1), dict(clamp_len=1.5), dict(same_length="yes")):
        with pytest.raises(ConfigError):
            span.replace(**bad)


def test_replace_recomputes_derived_defaults():
    config = ModelConfig.preset("tiny").replace(cutoffs=(100,), div_val=2)
    assert config.tie_projs == (False, True)
    assert ModelConfig.preset("tiny").replace(d_model=128).d_embed == 128
    explicit = ModelConfig(n_token=300, d_model=64, d_embed=32)
    assert explicit.replace(d_model=128).d_embed == 32
