"""The original release's TensorFlow checkpoints: the pure-Python reader and `txl convert --from tf`.

Without TensorFlow: the reader on committed fixtures (written once by TensorFlow with
``fixtures/make_tf_fixtures.py``) and the conversion of two tiny checkpoints in the original's variable
layout, checked against a NumPy forward pass that follows ``tf/model.py`` line by line.
With TensorFlow (the ``[tf]`` extra): checkpoints of every layout written by TensorFlow inside the test,
and, for the WikiText-103 layout, equality of every weight with transformers 4.37.2's
``load_tf_weights_in_transfo_xl``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from transformer_xl.cli import main
from transformer_xl.config import ModelConfig, TransformerXLError
from transformer_xl.interop.tf import config_from_tf, import_tf
from transformer_xl.interop.tf_checkpoint import TFCheckpoint, TFTensorEntry, _crc32c_python, crc32c, masked_crc32c
from transformer_xl.pretrained import load_pretrained, load_vocabulary

FIXTURES = Path(__file__).parent / "fixtures"
T = "transformer/"

# Tiny models in the original's layouts (tf/sota: enwik8/text8 plain char-level, wt103 and lm1b adaptive).
LAYOUTS: dict[str, dict[str, Any]] = {
    # enwik8 / text8: one lookup table, adaptive_softmax/bias, global u/v, no projection
    "char": dict(n_token=11, n_layer=2, d_model=8, n_head=2, d_head=4, d_inner=16, d_embed=8),
    # a plain table narrower than the model: proj_W, which the softmax reuses; untied u/v
    "char-proj": dict(n_token=9, n_layer=1, d_model=8, n_head=2, d_head=3, d_inner=12, d_embed=6, untie=True),
    # WikiText-103: cutoff_{k} tables, div_val, untied u/v, proj_share_all_but_first
    "wt103": dict(n_token=14, n_layer=2, d_model=8, n_head=2, d_head=4, d_inner=16, d_embed=8, cutoffs=[4, 8],
                  div_val=2, untie=True, tie_projs=[False, True, True]),
    # lm1b: proj_same_dim=False (no projection for the first cluster), no projection shared
    "lm1b": dict(n_token=14, n_layer=1, d_model=8, n_head=2, d_head=4, d_inner=16, d_embed=8, cutoffs=[4, 8],
                 div_val=2, untie=True, tie_projs=[False, False, False], proj_same_dim=False),
    # div_val 1 with cutoffs (the wt103 base scripts): one table, per-cluster softmax biases
    "flat-cutoffs": dict(n_token=13, n_layer=1, d_model=8, n_head=2, d_head=4, d_inner=16, d_embed=6, cutoffs=[5],
                         tie_projs=[False, True]),
}


def tf_variables(spec: dict[str, Any], *, seed: int = 0, shapes_only: bool = False) -> dict[str, Any]:
    """The variables tf/model.py creates for ``spec`` (its get_variable calls, in its shapes), random values
    (or only their shapes)."""
    rng = np.random.RandomState(seed)

    class Shape(tuple):
        def __add__(self, other: Any) -> "Shape":  # 1 + f(d) keeps the shape
            return self

        __radd__ = __add__

    def f(*shape: int) -> Any:
        return Shape(shape) if shapes_only else (rng.randn(*shape) * 0.3).astype(np.float32)

    n_token, n_layer, d_model, d_embed = spec["n_token"], spec["n_layer"], spec["d_model"], spec["d_embed"]
    heads = spec["n_head"] * spec["d_head"]
    cutoffs, div_val = list(spec.get("cutoffs", [])), spec.get("div_val", 1)
    tie_projs, same_dim = spec.get("tie_projs", [False] * (len(cutoffs) + 1)), spec.get("proj_same_dim", True)
    v: dict[str, np.ndarray] = {}
    bias_shape = (n_layer, spec["n_head"], spec["d_head"]) if spec.get("untie") else (spec["n_head"], spec["d_head"])
    v[T + "r_w_bias"], v[T + "r_r_bias"] = f(*bias_shape), f(*bias_shape)
    ends = [0] + cutoffs + [n_token]
    if div_val == 1:
        v[T + "adaptive_embed/lookup_table"] = f(n_token, d_embed)
        if d_embed != d_model:
            v[T + "adaptive_embed/proj_W"] = f(d_embed, d_model)
    else:
        for i in range(len(ends) - 1):
            d_i = d_embed // div_val ** i
            v[f"{T}adaptive_embed/cutoff_{i}/lookup_table"] = f(ends[i + 1] - ends[i], d_i)
            if not (d_i == d_model and not same_dim):
                v[f"{T}adaptive_embed/cutoff_{i}/proj_W"] = f(d_i, d_model)
    for i in range(n_layer):
        s = f"{T}layer_{i}/"
        v[s + "rel_attn/qkv/kernel"], v[s + "rel_attn/r/kernel"] = f(d_model, 3 * heads), f(d_model, heads)
        v[s + "rel_attn/o/kernel"] = f(heads, d_model)
        v[s + "rel_attn/LayerNorm/gamma"], v[s + "rel_attn/LayerNorm/beta"] = 1 + f(d_model), f(d_model)
        v[s + "ff/layer_1/kernel"], v[s + "ff/layer_1/bias"] = f(d_model, spec["d_inner"]), f(spec["d_inner"])
        v[s + "ff/layer_2/kernel"], v[s + "ff/layer_2/bias"] = f(spec["d_inner"], d_model), f(d_model)
        v[s + "ff/LayerNorm/gamma"], v[s + "ff/LayerNorm/beta"] = 1 + f(d_model), f(d_model)
    if not cutoffs:
        v[T + "adaptive_softmax/bias"] = f(n_token)
    for i in range(len(ends) - 1 if cutoffs else 0):
        s = f"{T}adaptive_softmax/cutoff_{i}/"
        d_i = d_embed // div_val ** i
        v[s + "b"] = f(ends[i + 1] - ends[i])
        if not tie_projs[i] and not ((div_val == 1 or not same_dim) and d_model == d_i):
            v[s + "proj"] = f(d_i, d_model)
        if i == 0:
            v[s + "cluster_W"], v[s + "cluster_b"] = f(len(cutoffs), d_embed), f(len(cutoffs))
    return v


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_log_probs(v: dict[str, np.ndarray], spec: dict[str, Any], tokens: np.ndarray) -> np.ndarray:
    """(T, V) log-probabilities of one segment without memory, computed from the TensorFlow variables as
    tf/model.py computes them (mask_adaptive_embedding_lookup, rel_multihead_attn, positionwise_FF,
    mask_adaptive_logsoftmax), in float64. Layer-norm epsilon 1e-5 (ours) so the comparison can be tight."""
    v = {k: a.astype(np.float64) for k, a in v.items()}
    n_token, d_model, n_head, d_head = spec["n_token"], spec["d_model"], spec["n_head"], spec["d_head"]
    cutoffs, div_val = list(spec.get("cutoffs", [])), spec.get("div_val", 1)
    ends = [0] + cutoffs + [n_token]
    qlen = len(tokens)
    if div_val == 1:
        y = v[T + "adaptive_embed/lookup_table"][tokens]
        if T + "adaptive_embed/proj_W" in v:
            y = y @ v[T + "adaptive_embed/proj_W"]
    else:
        y = np.zeros((qlen, d_model))
        for i in range(len(ends) - 1):
            inside = (tokens >= ends[i]) & (tokens < ends[i + 1])
            cur = v[f"{T}adaptive_embed/cutoff_{i}/lookup_table"][tokens[inside] - ends[i]]
            proj = v.get(f"{T}adaptive_embed/cutoff_{i}/proj_W")
            y[inside] = cur @ proj if proj is not None else cur
    h = y * d_model ** 0.5
    pos_seq = np.arange(qlen - 1, -1, -1.0)
    inv_freq = 1 / (10000 ** (np.arange(0, d_model, 2.0) / d_model))
    pos_emb = np.concatenate([np.sin(np.outer(pos_seq, inv_freq)), np.cos(np.outer(pos_seq, inv_freq))], -1)
    mask = np.triu(np.ones((qlen, qlen)), 1)  # _create_mask(qlen, 0) without same_length
    for layer in range(spec["n_layer"]):
        s = f"{T}layer_{layer}/"
        u, w_r = v[T + "r_w_bias"], v[T + "r_r_bias"]
        if u.ndim == 3:
            u, w_r = u[layer], w_r[layer]
        heads = h @ v[s + "rel_attn/qkv/kernel"]
        q, k, val = np.split(heads, 3, -1)
        q, k, val = (a.reshape(qlen, n_head, d_head) for a in (q, k, val))
        r = (pos_emb @ v[s + "rel_attn/r/kernel"]).reshape(qlen, n_head, d_head)
        ac = np.einsum("ind,jnd->ijn", q + u, k)
        bd_raw = np.einsum("ind,jnd->ijn", q + w_r, r)
        bd = np.zeros_like(bd_raw)
        for i in range(qlen):  # rel_shift: key j is at distance i - j, which is row qlen - 1 - (i - j) of r
            for j in range(i + 1):
                bd[i, j] = bd_raw[i, qlen - 1 - (i - j)]
        score = (ac + bd) / d_head ** 0.5
        score = score * (1 - mask[:, :, None]) - 1e30 * mask[:, :, None]
        prob = np.exp(score - score.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        vec = np.einsum("ijn,jnd->ind", prob, val).reshape(qlen, n_head * d_head)
        h = _layer_norm(vec @ v[s + "rel_attn/o/kernel"] + h, v[s + "rel_attn/LayerNorm/gamma"],
                        v[s + "rel_attn/LayerNorm/beta"])
        inner = np.maximum(h @ v[s + "ff/layer_1/kernel"] + v[s + "ff/layer_1/bias"], 0)
        h = _layer_norm(inner @ v[s + "ff/layer_2/kernel"] + v[s + "ff/layer_2/bias"] + h,
                        v[s + "ff/LayerNorm/gamma"], v[s + "ff/LayerNorm/beta"])

    def logit(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, proj: np.ndarray | None) -> np.ndarray:
        return (x @ proj.T if proj is not None else x) @ weight.T + bias

    if not cutoffs:
        return _log_softmax(logit(h, v[T + "adaptive_embed/lookup_table"], v[T + "adaptive_softmax/bias"],
                                  v.get(T + "adaptive_embed/proj_W")))
    parts, head = [], None
    for i in range(len(ends) - 1):
        s = f"{T}adaptive_softmax/cutoff_{i}/"
        weight = (v[T + "adaptive_embed/lookup_table"][ends[i]:ends[i + 1]] if div_val == 1
                  else v[f"{T}adaptive_embed/cutoff_{i}/lookup_table"])
        if s + "proj" in v:
            proj = v[s + "proj"]
        else:  # tied: the embedding's projection (or none)
            proj = v.get(T + "adaptive_embed/proj_W" if div_val == 1 else f"{T}adaptive_embed/cutoff_{i}/proj_W")
        bias = v[s + "b"]
        if i == 0:
            head = _log_softmax(logit(h, np.concatenate([weight, v[s + "cluster_W"]]),
                                      np.concatenate([bias, v[s + "cluster_b"]]), proj))
            parts.append(head[:, :ends[1]])
        else:
            parts.append(head[:, ends[1] + i - 1, None] + _log_softmax(logit(h, weight, bias, proj)))
    return np.concatenate(parts, -1)


def our_log_probs(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.as_tensor(tokens)[None], return_log_probs=True, mem_len=0, clamp_len=-1, same_length=False)
    return out.log_probs[0].double().numpy()


TOKENS = {"char": np.array([3, 0, 10, 7, 7, 1, 5]), "wt103": np.array([0, 13, 5, 9, 2, 8, 4, 12])}


# --------------------------------------------------------------------------------------------------
# The reader, on committed fixtures: no TensorFlow needed.
def test_crc32c_known_value_and_lanes_match_bytewise() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    rng = np.random.RandomState(1)
    for n in (1 << 15, (1 << 16) + 12345, 300_001):  # the numpy lane path, with and without a remainder
        data = rng.randint(0, 256, n).astype(np.uint8).tobytes()
        assert crc32c(data) == _crc32c_python(data)
    assert masked_crc32c(b"") == 0xA282EAD8


def test_reader_values_dtypes_shapes_exact() -> None:
    ckpt = TFCheckpoint(FIXTURES / "tf_dtypes" / "ck")
    assert ckpt.num_shards == 1
    assert ckpt.names() == ["a/float", "b/int64", "c/half", "d/scalar", "e/big", "f/bf16", "g/bool", "h/empty"]
    a = ckpt.read("a/float")
    assert a.dtype == torch.float32 and a.shape == (3, 4)
    assert torch.equal(a, torch.from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4) / np.float32(7)))
    assert ckpt.read("b/int64").tolist() == [1, -2, 2 ** 40]
    assert ckpt.read("c/half").dtype == torch.float16 and ckpt.read("c/half").tolist() == [[0.5, -1.25]]
    d = ckpt.read("d/scalar")
    assert d.dtype == torch.float64 and d.shape == () and d.item() == 3.25
    big = ckpt.read("e/big")
    assert torch.equal(big, torch.from_numpy(np.random.RandomState(0).randn(9000).astype(np.float32)))
    assert ckpt.read("f/bf16").tolist() == [1.5, -2.0] and ckpt.read("f/bf16").dtype == torch.bfloat16
    assert ckpt.read("g/bool").tolist() == [True, False, True]
    assert ckpt.read("h/empty").shape == (0, 3)
    entry = ckpt.entries["e/big"]
    raw = (FIXTURES / "tf_dtypes" / "ck.data-00000-of-00001").read_bytes()[entry.offset:entry.offset + entry.size]
    assert entry.size == 36000 and crc32c(raw) == entry.crc32c  # TensorFlow's stored CRC is ours


def test_reader_resolves_folder_index_and_data_names() -> None:
    folder = FIXTURES / "tf_char"
    for given in (folder, folder / "model.ckpt-0", folder / "model.ckpt-0.index",
                  folder / "model.ckpt-0.data-00000-of-00001"):
        assert TFCheckpoint(given).prefix == folder / "model.ckpt-0"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_tensor_byte_is_a_one_line_error(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "tf_dtypes", tmp_path / "ck")
    data = folder / "ck.data-00000-of-00001"
    ckpt = TFCheckpoint(folder / "ck")
    raw = bytearray(data.read_bytes())
    raw[ckpt.entries["e/big"].offset + 1000] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(TransformerXLError, match=r"bytes of e/big do not match their CRC-32C") as info:
        ckpt.read("e/big")
    assert "\n" not in str(info.value)
    assert ckpt.read("a/float").shape == (3, 4)  # the other tensors are intact
    assert ckpt.read("e/big", verify=False).shape == (9000,)


@pytest.mark.parametrize("damage", ["truncate-index", "flip-index", "truncate-data", "no-data"])
def test_damaged_files_are_one_line_errors(tmp_path: Path, damage: str) -> None:
    folder = _copy(FIXTURES / "tf_dtypes", tmp_path / "ck")
    index, data = folder / "ck.index", folder / "ck.data-00000-of-00001"
    if damage == "truncate-index":
        index.write_bytes(index.read_bytes()[:-20])
        pattern = "no table magic number"
    elif damage == "flip-index":
        raw = bytearray(index.read_bytes())
        raw[10] ^= 0x01
        index.write_bytes(bytes(raw))
        pattern = "checksum of the data block"
    elif damage == "truncate-data":
        data.write_bytes(data.read_bytes()[:100])
        pattern = "data file is truncated"
    else:
        data.unlink()
        pattern = "is missing"
    with pytest.raises(TransformerXLError, match=pattern) as info:
        TFCheckpoint(folder / "ck").read("e/big")
    assert "\n" not in str(info.value)


def test_every_bit_flip_or_cut_of_the_index_reads_exactly_or_fails_cleanly(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "tf_dtypes", tmp_path / "ck")
    index = folder / "ck.index"
    original = index.read_bytes()
    expected = {n: TFCheckpoint(folder / "ck").read(n) for n in TFCheckpoint(folder / "ck").names()}
    # (damaged bytes, whether it must fail): every change to the blocks is caught by their checksums; the 48-byte
    # footer holds the unused meta-index handle and padding, where a change may be harmless
    damaged = [(bytes(original[:i]) + bytes([original[i] ^ bit]) + original[i + 1:], i < len(original) - 48)
               for i in range(len(original)) for bit in (0x01, 0x80)]
    damaged += [(original[:cut], True) for cut in range(0, len(original), 5)]
    for raw, must_fail in damaged:
        index.write_bytes(raw)
        try:
            ckpt = TFCheckpoint(folder / "ck")
            assert not must_fail
            assert ckpt.names() == sorted(expected)
            assert all(torch.equal(ckpt.read(n), t) for n, t in expected.items())
        except TransformerXLError as exc:
            assert "\n" not in str(exc)


def test_not_a_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(TransformerXLError, match="not found"):
        TFCheckpoint(tmp_path / "model.ckpt-0")
    with pytest.raises(TransformerXLError, match="no TensorFlow checkpoint"):
        TFCheckpoint(tmp_path)
    (tmp_path / "x.index").write_bytes(b"\x00" * 100)
    with pytest.raises(TransformerXLError, match="magic"):
        TFCheckpoint(tmp_path / "x")


# --------------------------------------------------------------------------------------------------
# Conversion of the committed tiny checkpoints (written by TensorFlow, with Adam slots and global_step).
@pytest.mark.parametrize("layout", ["char", "wt103"])
def test_committed_checkpoint_converts_exactly(layout: str) -> None:
    folder = FIXTURES / f"tf_{layout}"
    model, skipped = import_tf(folder)
    assert "global_step" in skipped and any(s.endswith("/Adam_1") for s in skipped)
    spec = LAYOUTS[layout]
    assert (model.config.n_layer, model.config.n_head, model.config.d_head) == (spec["n_layer"], spec["n_head"],
                                                                                spec["d_head"])
    assert model.config.cutoffs == tuple(spec.get("cutoffs", ())) and model.config.untie_rel_bias == bool(
        spec.get("untie"))
    variables = {n: TFCheckpoint(folder).read(n).numpy() for n in TFCheckpoint(folder).names()
                 if n.startswith(T) and "/Adam" not in n}
    assert variables.keys() == tf_variables(spec).keys()
    tokens = TOKENS[layout]
    np.testing.assert_allclose(our_log_probs(model, tokens), reference_log_probs(variables, spec, tokens),
                               atol=2e-5, rtol=0)


def test_cli_convert_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    words = ["<eos>"] + [f"w{i}" for i in range(10)]  # the model's 11 ids
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"{w}\n" for w in words))
    dst = tmp_path / "ours"
    assert main(["convert", "--from", "tf", "--to", "ours", str(FIXTURES / "tf_char"), str(dst),
                 "--vocab", str(vocab), "--mem-len", "12", "--same-length"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "skipped" in out and "Adam" in out
    model = load_pretrained(dst)
    assert model.config.mem_len == 12 and model.config.same_length and model.config.n_token == 11
    assert load_vocabulary(dst).symbols == words
    text = tmp_path / "text.txt"
    rng = np.random.RandomState(0)
    text.write_text("".join(" ".join(f"w{i}" for i in rng.randint(0, 10, 12)) + "\n" for _ in range(60)))
    assert main(["prepare", "--corpus", "text", "--path", str(text), "--out", str(tmp_path / "data"), "--level",
                 "word", "--vocab", str(vocab), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(dst), "--data", str(tmp_path / "data"), "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(result["loss"]) and result["loss"] > 0


def test_cli_convert_refuses_wrong_preset_and_vocab(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = str(FIXTURES / "tf_char")
    assert main(["convert", "--from", "tf", "--to", "ours", src, str(tmp_path / "a"), "--preset", "enwik8-large"]) == 2
    err = capsys.readouterr().err
    assert "not the released enwik8-large model" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "v.txt").write_text("a\nb\n")
    assert main(["convert", "--from", "tf", "--to", "ours", src, str(tmp_path / "b"), "--vocab",
                 str(tmp_path / "v.txt")]) == 2
    assert "vocab" in capsys.readouterr().err
    assert main(["convert", "--from", "hf", "--to", "ours", src, str(tmp_path / "c"), "--preset", "wt103-large"]) == 2
    assert "only apply to --from tf" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_preset_release_settings_and_checks() -> None:
    ckpt = TFCheckpoint(FIXTURES / "tf_char")
    config = config_from_tf(ckpt, mem_len=40)
    assert config.mem_len == 40 and config.seg_len == 128 and not config.same_length
    with pytest.raises(TransformerXLError, match="not a released TensorFlow model"):
        config_from_tf(ckpt, preset="tiny")


# The four released models' variable layouts (tf/sota/*.sh flags), by shape only: each matches its preset.
RELEASED = {
    "enwik8-large": dict(n_token=204, n_layer=24, d_model=1024, n_head=8, d_head=128, d_inner=3072, d_embed=1024),
    "text8-large": dict(n_token=27, n_layer=24, d_model=1024, n_head=8, d_head=128, d_inner=3072, d_embed=1024),
    "wt103-large": dict(n_token=267735, n_layer=18, d_model=1024, n_head=16, d_head=64, d_inner=4096, d_embed=1024,
                        cutoffs=[20000, 40000, 200000], div_val=4, untie=True, tie_projs=[False, True, True, True]),
    "lm1b-large": dict(n_token=793471, n_layer=24, d_model=1280, n_head=16, d_head=80, d_inner=8192, d_embed=1280,
                       cutoffs=[60000, 100000, 640000], div_val=4, untie=True, tie_projs=[False] * 4,
                       proj_same_dim=False),
}


class ShapesOnly:
    """Stands in for a TFCheckpoint whose index lists these shapes (config_from_tf reads only the index)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.prefix = Path("released")
        self.entries = {n: TFTensorEntry(n, "float32", tuple(s), 0, 0, 0, None) for n, s in shapes.items()}

    def names(self) -> list[str]:
        return sorted(self.entries)


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_layouts_match_their_presets(name: str) -> None:
    ckpt = ShapesOnly(tf_variables(RELEASED[name], shapes_only=True))
    config = config_from_tf(ckpt, preset=name)  # type: ignore[arg-type]
    expected = ModelConfig.preset(name)
    for field in ("n_token", "n_layer", "n_head", "d_model", "d_head", "d_inner", "d_embed", "cutoffs", "div_val",
                  "tie_projs", "dropout"):
        assert getattr(config, field) == getattr(expected, field), field
    assert config.untie_rel_bias == bool(RELEASED[name].get("untie"))
    sota = {"enwik8-large": (128, 3800, 1000), "text8-large": (128, 3800, 1000), "wt103-large": (128, 1600, 1000),
            "lm1b-large": (32, 128, -1)}[name]
    assert (config.seg_len, config.mem_len, config.clamp_len, config.same_length) == sota + (True,)
    other = "lm1b-large" if name == "wt103-large" else "wt103-large"
    with pytest.raises(TransformerXLError, match=f"is not the released {other} model"):
        config_from_tf(ckpt, preset=other)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# With TensorFlow: checkpoints written by TensorFlow inside the test, every layout.
@pytest.fixture(scope="module")
def tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow", reason="tensorflow-cpu is not installed (pip install '.[tf]'); the "
                                                    "reader's own tests above run without it")


def write_tf_checkpoint(tf: Any, prefix: Path, variables: dict[str, np.ndarray], *, adam: bool = True) -> Path:
    """Save ``variables`` under their names with TensorFlow's SaveV2 (the op tf.train.Saver runs), plus Adam
    slots and the step counter as a training run saves them."""
    tensors = dict(variables)
    if adam:
        for name, value in variables.items():
            tensors[name + "/Adam"], tensors[name + "/Adam_1"] = value * 0.5, np.abs(value)
        tensors["global_step"] = np.array(1000, dtype=np.int64)
        tensors["beta1_power"], tensors["beta2_power"] = np.float32(0.9 ** 1000), np.float32(0.999 ** 1000)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tensorflow_written_layouts_convert_exactly(tf: Any, tmp_path: Path, layout: str) -> None:
    spec = LAYOUTS[layout]
    variables = tf_variables(spec, seed=3)
    prefix = write_tf_checkpoint(tf, tmp_path / "model.ckpt-7", variables)
    assert sorted(tf.train.list_variables(str(prefix))) == sorted(
        (n, list(e.shape)) for n, e in TFCheckpoint(prefix).entries.items())
    for name in variables:  # the reader returns what TensorFlow reads back, bit for bit
        assert np.array_equal(TFCheckpoint(prefix).read(name).numpy(), tf.train.load_variable(str(prefix), name))
    model, skipped = import_tf(prefix)
    assert len(skipped) == 2 * len(variables) + 3
    tokens = np.array([(7 * i + 3) % spec["n_token"] for i in range(9)])
    np.testing.assert_allclose(our_log_probs(model, tokens), reference_log_probs(variables, spec, tokens),
                               atol=2e-5, rtol=0)


def test_unmapped_variable_is_refused_by_name(tf: Any, tmp_path: Path) -> None:
    variables = tf_variables(LAYOUTS["char"])
    variables[T + "layer_0/rel_attn/q_bias"] = np.zeros(8, np.float32)
    prefix = write_tf_checkpoint(tf, tmp_path / "ck", variables, adam=False)
    with pytest.raises(TransformerXLError, match="'transformer/layer_0/rel_attn/q_bias' is not part of"):
        import_tf(prefix)


def test_wt103_layout_equals_transformers_loader(tf: Any, tmp_path: Path) -> None:
    """Every weight equal to what transformers 4.37.2's load_tf_weights_in_transfo_xl loads from the same file."""
    transfo = pytest.importorskip("transformers.models.deprecated.transfo_xl.modeling_transfo_xl")
    from transformers import TransfoXLConfig

    from transformer_xl.interop.hf import state_dict_to_hf

    spec = LAYOUTS["wt103"]
    prefix = write_tf_checkpoint(tf, tmp_path / "model.ckpt-0", tf_variables(spec, seed=5))
    hf_config = TransfoXLConfig(vocab_size=spec["n_token"], cutoffs=spec["cutoffs"], d_model=8, d_embed=8, n_head=2,
                                d_head=4, d_inner=16, div_val=2, n_layer=2, untie_r=True, tie_projs=[False, True, True],
                                proj_share_all_but_first=True, dropout=0.0, dropatt=0.0)
    hf_model = transfo.TransfoXLLMHeadModel(hf_config)
    transfo.load_tf_weights_in_transfo_xl(hf_model, hf_config, str(prefix))
    hf_state = hf_model.state_dict()
    ours = state_dict_to_hf(import_tf(prefix)[0])
    assert set(ours) <= set(hf_state)
    for name, tensor in ours.items():
        assert torch.equal(tensor, hf_state[name]), name
    # and the names HF keeps only as aliases of tied tensors agree too
    for name in set(hf_state) - set(ours):
        assert any(torch.equal(hf_state[name], t) for t in ours.values() if t.shape == hf_state[name].shape), name
