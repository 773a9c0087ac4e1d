"""Fuzzing (hypothesis, bounded and fast): the corpus readers, the vocabulary and the config parser
(TOML + dotted flags) either work or raise TransformerXLError; nothing else escapes (issue 8). Whole
checkpoint and prepared-data directories, with any file mutated (values, types, missing keys, truncation,
bit flips, links, FIFOs), load or raise a one-line TransformerXLError (issue 12)."""

from __future__ import annotations

import functools
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


# --- whole checkpoint and prepared-data directories (issue 12) ------------------------------------------------
CHECKPOINT_FILES = ["config.json", "run.json", "vocab.json", "checksums.json", "model.safetensors",
                    "training_state.pt"]
DATA_FILES = ["meta.json", "vocab.json", "train.npy", "valid.npy", "test.npy"]
OPS = ["json_set", "json_del", "truncate", "flip", "garbage", "delete", "folder", "link_dev_zero", "fifo",
       "link_other"]


@functools.lru_cache(maxsize=1)
def _bases() -> tuple[Path, Path]:
    """A tiny training checkpoint and a prepared corpus, built once, never mutated (copies are)."""
    import numpy as np

    from transformer_xl.config import ModelConfig
    from transformer_xl.data.cache import prepare_corpus
    from transformer_xl.model import TransformerXLLM
    from transformer_xl.training.checkpoint import rng_state, save_checkpoint

    root = Path(tempfile.mkdtemp(prefix="txl-fuzz-"))
    (root / "corpus.txt").write_text("".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(60)),
                                     encoding="utf-8")
    prepared = prepare_corpus("text", root / "corpus.txt", root / "data", level="char", progress=False,
                              valid_fraction=0.1, test_fraction=0.1)
    import torch

    config = ModelConfig(n_token=len(prepared.vocab), n_layer=1, n_head=2, d_model=8, d_head=4, d_inner=16,
                         seg_len=4, mem_len=4)
    model = TransformerXLLM(config)
    state = {"step": 3, "world_size": 1, "best_valid_loss": 1.0, "optimizer": {"state": {}, "param_groups": []},
             "scaler": None, "streams": {"position": 4}, "mems": None, "rng": [rng_state(torch.device("cpu"))],
             "data": "0" * 32, "extra": np.int64(3).item()}
    save_checkpoint(root / "ckpt", model=model, run_config=RunConfig(model=config), training_state=state,
                    vocab=prepared.vocab)
    return root / "ckpt", root / "data"


def _mutate(directory: Path, name: str, op: str, value: object, where: float, keep_checksums: bool) -> None:
    import os

    path = directory / name
    if not keep_checksums and name != "checksums.json":
        (directory / "checksums.json").unlink(missing_ok=True)
    raw = path.read_bytes() if path.is_file() else b""
    if op in ("json_set", "json_del") and name.endswith(".json"):
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict) or not data:
            return
        keys = sorted(data)
        key = keys[int(where * len(keys)) % len(keys)]
        inner = data[key]
        if isinstance(inner, dict) and inner and where > 0.5:  # one level down: meta's splits, run.json sections
            sub = sorted(inner)[int(where * 7) % len(inner)]
            if op == "json_del":
                del inner[sub]
            else:
                inner[sub] = value
        elif op == "json_del":
            del data[key]
        else:
            data[key] = value
        path.write_text(json.dumps(data), encoding="utf-8")
    elif op == "truncate":
        path.write_bytes(raw[: int(len(raw) * where)])
    elif op == "flip" and raw:
        data = bytearray(raw)
        data[int(where * (len(data) - 1))] ^= 1 << int(where * 8) % 8
        path.write_bytes(bytes(data))
    elif op == "garbage":
        path.write_bytes(bytes((i * 37 + int(where * 255)) % 256 for i in range(int(where * 300))))
    elif op == "delete":
        path.unlink(missing_ok=True)
    elif op == "folder":
        path.unlink(missing_ok=True)
        path.mkdir()
    elif op in ("link_dev_zero", "fifo", "link_other"):
        path.unlink(missing_ok=True)
        if op == "fifo":
            os.mkfifo(path)
        else:
            os.symlink("/dev/zero" if op == "link_dev_zero" else directory / sorted(
                p.name for p in directory.iterdir() if p.name != name)[0], path)


def _copy(base: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(base, dst)
    return dst


json_values = st.one_of(scalars, st.lists(st.integers(-5, 10**7), max_size=3),
                        st.dictionaries(st.sampled_from(["tokens", "file", "dtype", "x"]), scalars, max_size=2))


@FAST
@given(st.sampled_from(CHECKPOINT_FILES), st.sampled_from(OPS), json_values, st.floats(0, 1), st.booleans())
def test_checkpoint_directory_loads_or_says_why(name: str, op: str, value: object, where: float,
                                                keep_checksums: bool) -> None:
    import signal

    from transformer_xl.runtime import load_checkpoint
    from transformer_xl.training.checkpoint import load_training_state

    base, _ = _bases()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _copy(base, Path(tmp) / "ckpt")
        _mutate(ckpt, name, op, value, where, keep_checksums)
        signal.alarm(30)  # a FIFO or /dev/zero read would hang: fail instead
        try:
            for load in (load_checkpoint, load_training_state):
                try:
                    load(ckpt)
                except TransformerXLError as exc:
                    assert "\n" not in str(exc)  # the CLI prints one line
        finally:
            signal.alarm(0)


@FAST
@given(st.sampled_from(DATA_FILES), st.sampled_from(OPS), json_values, st.floats(0, 1))
def test_prepared_directory_loads_or_says_why(name: str, op: str, value: object, where: float) -> None:
    import signal

    from transformer_xl.data.cache import load_prepared

    _, base = _bases()
    with tempfile.TemporaryDirectory() as tmp:
        data = _copy(base, Path(tmp) / "data")
        _mutate(data, name, op, value, where, True)
        signal.alarm(30)
        try:
            try:
                prepared = load_prepared(data)
            except TransformerXLError as exc:
                assert "\n" not in str(exc)
                return
            for split in prepared.splits:  # what loads is usable: every split readable, ids in range or not
                ids = prepared.split(split)
                assert ids.ndim == 1 and len(ids) == prepared.tokens[split]
            prepared.summary()
        finally:
            signal.alarm(0)
