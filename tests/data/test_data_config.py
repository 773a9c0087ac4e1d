"""DataConfig: validated values with the offending value in the message, dict round trip."""

from __future__ import annotations

import pytest

from transformer_xl.config import ConfigError, DataConfig


def test_defaults_are_the_demo_corpus_and_round_trip() -> None:
    config = DataConfig()
    assert config.corpus == "pystdlib" and config.out_dir == "data/pystdlib"
    assert DataConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("changes, match", [
    ({"corpus": "wiki"}, "'wiki'"), ({"level": "bpe"}, "'bpe'"), ({"min_freq": 0}, "0"),
    ({"errors": "ignore"}, "'ignore'"), ({"valid_fraction": 0.7}, "0.7"),
    ({"corpus": "enwik8"}, "needs a path"),
])
def test_invalid_values_are_named(changes, match) -> None:
    with pytest.raises(ConfigError, match=match):
        DataConfig(**changes)
    with pytest.raises(ConfigError, match="unknown DataConfig"):
        DataConfig.from_dict({"corpus": "text", "path": "x", "bogus": 1})


def test_how_training_reads_the_data_is_a_train_option() -> None:
    from transformer_xl.config import TrainConfig

    assert TrainConfig().streams == "auto"
    with pytest.raises(ConfigError, match="train.streams must be one of .*'shuffled'"):
        TrainConfig(streams="shuffled")
    with pytest.raises(ConfigError, match="unknown DataConfig"):  # the stream options moved to [train]
        DataConfig.from_dict({"varlen": True})
