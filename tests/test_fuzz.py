"""Fuzzing (hypothesis, bounded and fast): the corpus readers, the vocabulary and the config parser
(TOML + dotted flags) either work or raise TransformerXLError; nothing else escapes (issue 8)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_xl.config import RunConfig, TransformerXLError, load_toml
from transformer_xl.data.vocab import Vocabulary

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# values a user might type into a config: numbers of every kind, strings, lists, nested tables
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                           inner, max_size=3),
                      max_leaves=5)
FIELDS = {"model": ["n_token", "n_layer", "n_head", "d_model", "d_head", "d_inner", "seg_len", "mem_len",
                    "dropout", "clamp_len", "cutoffs", "attn_type", "same_length"],
          "optim": ["lr", "warmup_steps", "schedule", "clip", "optimizer"],
          "train": ["batch_size", "grad_accum", "max_steps", "max_time", "nan_policy", "max_bad_steps",
                    "dist_timeout", "precision", "save_every"],
          "eval": ["seg_len", "mem_len", "batch_size", "warmup"]}
section_dicts = st.fixed_dictionaries({}, optional={
    name: st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), values, max_size=4)
    for name, keys in FIELDS.items()})


@FAST
@given(section_dicts)
def test_run_config_from_any_dict(data: dict) -> None:
    try:
        config = RunConfig.from_dict(data)
    except TransformerXLError:
        return
    assert RunConfig.from_dict(config.to_dict()) == config  # what is accepted round-trips


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_toml_loader_on_any_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.toml"
        path.write_bytes(raw)
        try:
            load_toml(path)
        except TransformerXLError:
            pass


@FAST
@given(st.lists(st.tuples(st.sampled_from([f"--{s}.{k}" for s, keys in FIELDS.items() for k in keys]),
                          st.text(alphabet="-0123456789.eEinfatrulsxyz_", max_size=8)), max_size=4))
def test_dotted_flags(flags: list[tuple[str, str]]) -> None:
    from transformer_xl.cli import build_parser
    from transformer_xl.cli.train import resolve_config

    argv = ["train", "--data", "D", "--out", "R"] + [x for pair in flags for x in pair]
    try:
        args = build_parser().parse_args(argv)
        resolve_config(args, n_token=20)
    except SystemExit as exc:  # argparse: malformed value, exit status 2
        assert exc.code == 2
    except TransformerXLError:
        pass


@FAST
@given(st.sampled_from(["char", "word"]), st.lists(st.text(min_size=1, max_size=3), max_size=12),
       st.text(max_size=40))
def test_vocabulary_build_encode_decode(kind: str, symbols: list[str], text: str) -> None:
    try:
        vocab = Vocabulary(kind, ["<unk>", *symbols], specials={"unk": "<unk>"})
    except TransformerXLError:
        return
    try:
        ids = vocab.encode(text)
    except TransformerXLError:
        return
    assert ids.size == 0 or (0 <= int(ids.min()) and int(ids.max()) < len(vocab))
    vocab.decode(ids)
    again = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab


@FAST
@given(st.text(max_size=60))
def test_byte_vocabulary_round_trips_any_text(text: str) -> None:
    vocab = Vocabulary.byte_level()
    assert vocab.decode(vocab.encode(text)) == text


@FAST
@given(st.binary(max_size=120))
def test_vocabulary_file_loader_on_any_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_bytes(raw)
        try:
            vocab = Vocabulary.load(path)
        except TransformerXLError:
            return
        assert len(vocab) > 0


@pytest.mark.slow
@SLOW
@given(st.binary(min_size=0, max_size=400), st.sampled_from(["byte", "char", "word"]),
       st.sampled_from(["strict", "replace"]))
def test_corpus_reader_on_any_bytes(raw: bytes, level: str, errors: str) -> None:
    from transformer_xl.data.cache import prepare_corpus

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.txt"
        source.write_bytes(raw)
        try:
            corpus = prepare_corpus("text", source, Path(tmp) / "out", level=level, errors=errors, progress=False,
                                    valid_fraction=0.1, test_fraction=0.1)
        except TransformerXLError:
            return
        for split in ("train", "valid", "test"):
            try:
                ids = corpus.split(split)
            except TransformerXLError:
                continue
            assert ids.size == 0 or int(ids.max()) < len(corpus.vocab)
        if level == "byte":  # bytes are stored as they are: the splits together are the file
            joined = b"".join(bytes(corpus.split(s).astype("uint8")) for s in ("train", "valid", "test"))
            assert joined == raw
