"""Configuration dataclasses and the released presets.

Configs are kw-only stdlib dataclasses validated in ``__post_init__``; invalid values raise
:class:`ConfigError` (a :class:`TransformerXLError`) with the offending values in the message.
Field names follow the original release, with two documented aliases: ``seg_len`` is the original
``tgt_len`` and ``attn_dropout`` is the original ``dropatt``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "ATTENTION_TYPES",
    "ConfigError",
    "ModelConfig",
    "PRESET_NAMES",
    "Span",
    "TransformerXLError",
    "preset_eval_span",
]


class TransformerXLError(Exception):
    """An error the user can cause and fix (bad value, missing file, mismatched checkpoint).

    The command line prints its message on one line and exits with status 2, without a traceback.
    """


class ConfigError(TransformerXLError, ValueError):
    """A configuration value is invalid."""


# The four attention variants of the paper's ablation (Table 6), one class each in model/attention.py.
ATTENTION_TYPES = ("xl", "shaw", "vaswani", "al-rfou")
ATTENTION_IMPLS = ("auto", "sdpa", "explicit")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Every option of the original Transformer-XL model.

    The config describes the model as built and trained: the lengths (``seg_len``, ``mem_len``,
    ``ext_len``, ``clamp_len``, ``same_length``) are the training values. How a call runs the model (its
    :class:`Span`) is an argument of that call and defaults to these; nothing changes a config afterwards.
    """

    n_token: int  # vocabulary size V
    n_layer: int = 12  # number of decoder layers L
    n_head: int = 8  # attention heads H
    d_model: int = 512  # hidden size C
    d_head: int = 64  # size of one head D
    d_inner: int = 2048  # inner size of the position-wise feed-forward
    d_embed: int | None = None  # embedding size before projection; None means d_model
    dropout: float = 0.1  # on embeddings, positional embeddings, residual branches, softmax input
    attn_dropout: float = 0.0  # on attention probabilities (original: dropatt)
    seg_len: int = 128  # tokens predicted per segment T (original: tgt_len)
    mem_len: int = 128  # cached hidden states per layer M (0: no recurrence)
    ext_len: int = 0  # extended context: trailing tokens re-fed as context, kept out of memory
    clamp_len: int = -1  # relative distances beyond this share one encoding; <= 0: no clamping
    same_length: bool = False  # every query attends to the same number of keys (at most mem_len)
    pre_norm: bool = False  # layer norm before each sub-layer instead of after (original: pre_lnorm)
    untie_rel_bias: bool = False  # per-layer u and v instead of global ones (original: untie_r)
    attn_type: str = "xl"  # one of ATTENTION_TYPES
    attn_impl: str = "auto"  # "sdpa" (fused, positional term as a bias), "explicit", or per device/grad
    cutoffs: tuple[int, ...] = ()  # adaptive embedding / softmax cluster boundaries; () is plain
    div_val: int = 1  # embedding size divisor per cluster (adaptive input)
    tie_weight: bool = True  # share the word embedding and softmax output weights
    tie_projs: tuple[bool, ...] | None = None  # per cluster: share the projection; None: (False, True, ...)
    init_std: float = 0.02  # std of the normal initialisation of weights
    proj_init_std: float = 0.01  # std of the normal initialisation of projections
    gradient_checkpointing: bool = False  # recompute layer activations in backward to save memory
    recompute_attention: bool = False  # training keeps q, k, v per layer; scores/probs recomputed in backward
    sample_softmax: int = 0  # training only: N log-uniform negatives per step instead of the full softmax; 0: off

    def __post_init__(self) -> None:
        # Normalise sequence fields coming from JSON/TOML (lists) into tuples, and fill defaults.
        object.__setattr__(self, "cutoffs", tuple(int(c) for c in self.cutoffs))
        if self.d_embed is None:
            object.__setattr__(self, "d_embed", self.d_model)
        if self.tie_projs is None:
            object.__setattr__(self, "tie_projs", (False,) + (True,) * len(self.cutoffs))
        else:
            object.__setattr__(self, "tie_projs", tuple(bool(t) for t in self.tie_projs))
        self._validate()

    def _validate(self) -> None:
        for name in ("n_token", "n_layer", "n_head", "d_model", "d_head", "d_inner", "d_embed", "seg_len"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                     f"{name} must be a positive integer, got {value!r}")
        for name in ("mem_len", "ext_len"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                     f"{name} must be a non-negative integer, got {value!r}")
        _require(isinstance(self.clamp_len, int), f"clamp_len must be an integer, got {self.clamp_len!r}")
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}")
        for name in ("init_std", "proj_init_std"):
            _require(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)!r}")
        _require(self.attn_type in ATTENTION_TYPES,
                 f"attn_type must be one of {ATTENTION_TYPES}, got {self.attn_type!r}")
        _require(self.attn_impl in ATTENTION_IMPLS,
                 f"attn_impl must be one of {ATTENTION_IMPLS}, got {self.attn_impl!r}")
        _require(isinstance(self.recompute_attention, bool),
                 f"recompute_attention must be true or false, got {self.recompute_attention!r}")
        _require(self.d_model % 2 == 0, f"d_model must be even for the sinusoid encoding, got {self.d_model}")
        cut = self.cutoffs
        _require(all(a < b for a, b in zip((0,) + cut, cut + (self.n_token,))),
                 f"cutoffs must increase strictly within (0, n_token={self.n_token}), got {list(cut)}")
        _require(isinstance(self.div_val, int) and self.div_val >= 1, f"div_val must be >= 1, got {self.div_val!r}")
        smallest = self.d_embed // (self.div_val ** len(cut))
        _require(smallest >= 1,
                 f"d_embed={self.d_embed} // div_val={self.div_val}**{len(cut)} leaves an empty embedding")
        _require(len(self.tie_projs) == len(cut) + 1,
                 f"tie_projs needs one entry per cluster ({len(cut) + 1}), got {list(self.tie_projs)}")
        n = self.sample_softmax
        _require(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < self.n_token,
                 f"sample_softmax must be an integer in [0, n_token={self.n_token}), got {n!r}")
        _require(n == 0 or not cut,
                 f"sample_softmax needs a plain softmax, got cutoffs {list(cut)}: empty model.cutoffs "
                 "(--model.cutoffs \"\"; the adaptive softmax already avoids the full-vocabulary product) "
                 "or set sample_softmax 0")

    # ----------------------------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        return len(self.cutoffs)

    @property
    def max_klen(self) -> int:
        """Longest attention span at the training lengths: ext_len + seg_len + mem_len."""
        return self.seg_len + self.ext_len + self.mem_len

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        _require(not unknown, f"unknown ModelConfig field(s): {sorted(unknown)}")
        # Derived defaults follow the fields they derive from, unless set explicitly.
        if "cutoffs" in changes and "tie_projs" not in changes:
            if self.tie_projs == (False,) + (True,) * len(self.cutoffs):
                changes["tie_projs"] = None
        if "d_model" in changes and "d_embed" not in changes and self.d_embed == self.d_model:
            changes["d_embed"] = None
        return dataclasses.replace(self, **changes)

    @property
    def train_span(self) -> "Span":
        """The span the model was trained with."""
        return Span(seg_len=self.seg_len, mem_len=self.mem_len, clamp_len=self.clamp_len,
                    same_length=self.same_length)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        d["tie_projs"] = list(self.tie_projs)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        _require(not unknown, f"unknown ModelConfig field(s): {sorted(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:  # a required field (n_token) is missing
            raise ConfigError(f"model config: {exc}".replace("ModelConfig.__init__() ", "")) from None

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"model config not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"model config {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"model config {path} must hold a JSON object")
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """The model of a named preset; ``overrides`` change fields (e.g. ``n_token`` for your vocabulary)."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        model, _ = _PRESETS[name]()
        return model.replace(**overrides) if overrides else model


@dataclass(frozen=True, kw_only=True)
class Span:
    """How far a model attends when it is run: segment length, memory length, clamp, same_length.

    The paper evaluates with a shorter segment and a much longer memory than it trains with (wt103:
    trained 150/150, evaluated 64 tokens over 640 of memory, distances clamped at 400). A call passes
    the span to the model (``mem_len=..., clamp_len=..., same_length=...``; ``seg_len`` is the length of
    the segments fed); :func:`transformer_xl.runtime.resolve_span` picks it for a checkpoint.
    """

    seg_len: int
    mem_len: int
    clamp_len: int = -1  # <= 0: no clamping
    same_length: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.seg_len, int) and not isinstance(self.seg_len, bool) and self.seg_len > 0,
                 f"seg_len must be a positive integer, got {self.seg_len!r}")
        _require(isinstance(self.mem_len, int) and not isinstance(self.mem_len, bool) and self.mem_len >= 0,
                 f"mem_len must be a non-negative integer, got {self.mem_len!r}")
        _require(isinstance(self.clamp_len, int) and not isinstance(self.clamp_len, bool),
                 f"clamp_len must be an integer, got {self.clamp_len!r}")
        _require(isinstance(self.same_length, bool), f"same_length must be true or false, got {self.same_length!r}")

    def replace(self, **changes: Any) -> "Span":
        """A copy with the fields given as non-None values changed (validated again)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for logs: ``seg_len 64, mem_len 640, clamp_len 400, same_length on``."""
        clamp = f"clamp_len {self.clamp_len}" if self.clamp_len > 0 else "no clamp"
        return (f"seg_len {self.seg_len}, mem_len {self.mem_len}, {clamp}, "
                f"same_length {'on' if self.same_length else 'off'}")


# --------------------------------------------------------------------------------------------------
# Presets. The paper's models use the hyper-parameters of the released run scripts
# (scripts/run_{wt103,enwik8,text8,lm1b}_{base,large}.sh): training lengths in the model config,
# evaluation lengths alongside. Small CPU presets: `char-small` and `word-small` are the
# benchmark configs C and W; `tiny` is for tests and smoke runs.

WT103_VOCAB = 267_735
LM1B_VOCAB = 793_471
ENWIK8_VOCAB = 204
TEXT8_VOCAB = 27


def _wt103_base() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=WT103_VOCAB, n_layer=16, d_model=410, n_head=10, d_head=41, d_inner=2100,
                        dropout=0.1, attn_dropout=0.0, seg_len=150, mem_len=150,
                        cutoffs=(20000, 40000, 200000), div_val=1),
            Span(seg_len=64, mem_len=640, clamp_len=400, same_length=True))


def _wt103_large() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=WT103_VOCAB, n_layer=18, d_model=1024, n_head=16, d_head=64, d_inner=4096,
                        dropout=0.2, attn_dropout=0.2, seg_len=384, mem_len=384,
                        cutoffs=(20000, 40000, 200000), div_val=4),
            Span(seg_len=128, mem_len=1600, clamp_len=1000, same_length=True))


def _enwik8_base() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=ENWIK8_VOCAB, n_layer=12, d_model=512, n_head=8, d_head=64, d_inner=2048,
                        dropout=0.1, attn_dropout=0.0, seg_len=512, mem_len=512),
            Span(seg_len=80, mem_len=2100, clamp_len=820, same_length=True))


def _enwik8_large() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=ENWIK8_VOCAB, n_layer=24, d_model=1024, n_head=8, d_head=128, d_inner=3072,
                        dropout=0.15, attn_dropout=0.15, seg_len=768, mem_len=768),
            Span(seg_len=128, mem_len=3800, clamp_len=1000, same_length=True))


def _text8_large() -> tuple[ModelConfig, Span]:
    model, span = _enwik8_large()
    return model.replace(n_token=TEXT8_VOCAB), span


def _lm1b_base() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=LM1B_VOCAB, n_layer=18, d_model=1024, n_head=8, d_head=128, d_inner=4096,
                        dropout=0.0, attn_dropout=0.0, seg_len=32, mem_len=32,
                        cutoffs=(60000, 100000, 640000), div_val=4, tie_projs=(False,) * 4),
            Span(seg_len=32, mem_len=64, clamp_len=-1, same_length=True))


def _lm1b_large() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=LM1B_VOCAB, n_layer=24, d_model=1280, n_head=16, d_head=80, d_inner=8192,
                        dropout=0.05, attn_dropout=0.05, seg_len=32, mem_len=32,
                        cutoffs=(60000, 100000, 640000), div_val=4, tie_projs=(False,) * 4),
            Span(seg_len=32, mem_len=64, clamp_len=-1, same_length=True))


def _char_small() -> tuple[ModelConfig, Span]:
    # Benchmark config C: byte level, fits a laptop CPU.
    return (ModelConfig(n_token=256, n_layer=6, d_model=256, n_head=8, d_head=32, d_inner=1024,
                        dropout=0.1, seg_len=128, mem_len=128),
            Span(seg_len=64, mem_len=640, clamp_len=-1, same_length=True))


def _word_small() -> tuple[ModelConfig, Span]:
    # Benchmark config W: word level with an adaptive softmax.
    return (ModelConfig(n_token=32000, n_layer=4, d_model=256, n_head=8, d_head=32, d_inner=1024,
                        dropout=0.1, seg_len=128, mem_len=128, cutoffs=(2000, 8000), div_val=4),
            Span(seg_len=64, mem_len=640, clamp_len=-1, same_length=True))


def _tiny() -> tuple[ModelConfig, Span]:
    return (ModelConfig(n_token=256, n_layer=2, d_model=64, n_head=2, d_head=32, d_inner=128,
                        dropout=0.0, seg_len=32, mem_len=32),
            Span(seg_len=16, mem_len=96, clamp_len=-1, same_length=True))


_PRESETS: dict[str, Callable[[], tuple[ModelConfig, Span]]] = {
    "wt103-base": _wt103_base,
    "wt103-large": _wt103_large,
    "enwik8-base": _enwik8_base,
    "enwik8-large": _enwik8_large,
    "text8-large": _text8_large,
    "lm1b-base": _lm1b_base,
    "lm1b-large": _lm1b_large,
    "char-small": _char_small,
    "word-small": _word_small,
    "tiny": _tiny,
}
PRESET_NAMES = tuple(_PRESETS)


def preset_eval_span(name: str) -> Span:
    """The evaluation span the released scripts use for a preset."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]()[1]


# === data configs (DataConfig) ===

# Corpora `txl prepare` reads (transformer_xl.data.corpora holds their readers) and the levels.
DATA_CORPORA = ("wikitext-103", "wikitext-2", "ptb", "enwik8", "text8", "lm1b", "text", "pystdlib")
DATA_LEVELS = ("byte", "char", "word")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which corpus, where it is and how it is prepared (``txl prepare``); how training reads it is
    ``TrainConfig.streams``."""

    corpus: str = "pystdlib"  # one of DATA_CORPORA; pystdlib needs no path (the demo's corpus)
    path: str | None = None  # source file, folder, zip or glob; None only for pystdlib
    out: str | None = None  # prepared directory; None: data/<corpus>
    level: str | None = None  # byte | char | word; None: the corpus's standard level
    min_freq: int = 1  # words seen fewer times in train map to <unk> (vocabularies built here)
    max_vocab: int | None = None  # most symbols, special tokens included; None: no limit
    lower: bool = False  # lower-case before splitting (ptb always is)
    errors: str = "strict"  # invalid UTF-8: "strict" stops with the byte offset, "replace" uses U+FFFD
    valid_fraction: float = 0.05  # text/pystdlib split of a single source, at line boundaries
    test_fraction: float = 0.05
    vocab_file: str | None = None  # a given vocabulary (JSON or one symbol a line) instead of building one

    def __post_init__(self) -> None:
        _require(self.corpus in DATA_CORPORA, f"corpus must be one of {DATA_CORPORA}, got {self.corpus!r}")
        _require(self.level is None or self.level in DATA_LEVELS,
                 f"level must be one of {DATA_LEVELS} or None, got {self.level!r}")
        _require(isinstance(self.min_freq, int) and self.min_freq >= 1, f"min_freq must be >= 1, got {self.min_freq!r}")
        _require(self.max_vocab is None or (isinstance(self.max_vocab, int) and self.max_vocab >= 1),
                 f"max_vocab must be a positive integer or None, got {self.max_vocab!r}")
        _require(self.errors in ("strict", "replace"), f"errors must be 'strict' or 'replace', got {self.errors!r}")
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(0.0 < value < 0.5, f"{name} must be in (0, 0.5), got {value!r}")
        _require(self.path is not None or self.corpus == "pystdlib",
                 f"corpus {self.corpus!r} needs a path to its files")

    @property
    def out_dir(self) -> str:
        return self.out if self.out is not None else f"data/{self.corpus}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DataConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        _require(not unknown, f"unknown DataConfig field(s): {sorted(unknown)}")
        return cls(**dict(data))



# === training and evaluation configs (OptimConfig, TrainConfig, EvalConfig) ===
OPTIMIZERS = ("adam", "adamw", "lamb", "muon")
SCHEDULES = ("cosine", "inv_sqrt", "constant")
DECAY_CLOCKS = ("steps", "time")
PRECISIONS = ("fp32", "bf16", "fp16")
NAN_POLICIES = ("skip", "stop", "ignore")
# How training reads the prepared training split (transformer_xl.data.streams.make_train_streams): "ordered"
# contiguous streams, "rolled" the same over the corpus rotated by a random offset each epoch (small corpora
# read many times), "varlen" the paper's variable-length segments, "sentences" whole sentences shuffled per
# epoch (lm1b); "auto" is sentences when the prepared split stores sentence starts (lm1b), else ordered.
TRAIN_STREAMS = ("auto", "ordered", "rolled", "varlen", "sentences")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (the paper: Adam, linear warmup then cosine annealing)."""

    # "muon": the decoder layers' matrices take orthogonalised momentum steps sized like AdamW's, the other
    # parameters AdamW steps, so lr and weight_decay tuned for AdamW carry over (training/muon.py)
    optimizer: str = "adam"  # "adam", "adamw", "lamb" (NVIDIA's variant: lr ~0.01) or "muon" (Muon + AdamW)
    lr: float = 2.5e-4  # peak learning rate
    lr_min: float = 0.0  # floor the cosine schedule decays to (original: eta_min)
    schedule: str = "cosine"  # "cosine" (warmup then cosine), "inv_sqrt" or "constant" (after warmup)
    warmup_steps: int = 0  # linear warmup from 0 to lr
    decay_steps: int = 0  # length of the cosine decay; 0: train.max_steps
    decay_clock: str = "steps"  # cosine over steps, or over "time": train.max_time seconds (resumes included)
    weight_decay: float = 0.0  # decoupled with adamw and lamb, L2 with adam
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.999  # Adam beta2
    eps: float = 1e-8  # Adam epsilon
    momentum: float = 0.95  # Muon's momentum (optimizer "muon"; Nesterov)
    clip: float = 0.25  # gradient norm clipping; 0 disables

    def __post_init__(self) -> None:
        _require(self.optimizer in OPTIMIZERS, f"optim.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _require(self.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _require(self.decay_clock in DECAY_CLOCKS,
                 f"optim.decay_clock must be one of {DECAY_CLOCKS}, got {self.decay_clock!r}")
        _require(self.decay_clock == "steps" or self.schedule == "cosine",
                 f"optim.decay_clock 'time' times the cosine decay; optim.schedule is {self.schedule!r}")
        _require(self.lr > 0, f"optim.lr must be positive, got {self.lr!r}")
        _require(0 <= self.lr_min <= self.lr, f"optim.lr_min must be in [0, lr={self.lr}], got {self.lr_min!r}")
        for name in ("warmup_steps", "decay_steps"):
            _require(getattr(self, name) >= 0, f"optim.{name} must be >= 0, got {getattr(self, name)!r}")
        _require(self.weight_decay >= 0 and self.clip >= 0 and self.eps > 0,
                 f"optim.weight_decay, clip >= 0 and eps > 0 needed; got {self.weight_decay}, {self.clip}, {self.eps}")
        _require(0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum!r}")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
                 f"optim.beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop: batch, length of the run, cadence of logging, evaluation and checkpoints."""

    batch_size: int = 22  # global number of parallel streams, split evenly over the processes
    grad_accum: int = 1  # chunks per step (original: batch_chunk); each chunk keeps its own memory
    max_steps: int = 1000  # optimiser steps in the whole run
    max_time: float = 0.0  # seconds; stop and save once exceeded (0: no limit); with optim.decay_clock "time"
    # the whole run's training seconds, resumes included, else this invocation's
    log_every: int = 10  # steps between metric lines
    eval_every: int = 200  # steps between validation runs (0: only at the end)
    eval_batch_size: int = 10  # streams in validation
    eval_max_tokens: int = 0  # tokens of the validation split scored (0: all of it)
    save_every: int = 200  # steps between checkpoints of last/ (0: only at the end)
    seed: int = 1111  # seeds initialisation, dropout, variable segment lengths and the sentence shuffle
    streams: str = "auto"  # one of TRAIN_STREAMS: "auto", "ordered", "rolled", "varlen" or "sentences"
    input_noise: float = 0.0  # chance of each input token being replaced by a unigram draw (targets kept); 0: off
    ema_decay: float = 0.0  # > 0: validation and checkpoints use the weights' moving average, decay per step; 0: off
    precision: str = "fp32"  # "fp32", "bf16" (autocast, CPU or CUDA) or "fp16" (CUDA, with a grad scaler)
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    nan_policy: str = "skip"  # non-finite loss or gradient: "skip" the step, "stop" the run, or "ignore" it
    max_bad_steps: int = 10  # with nan_policy=skip: stop after this many consecutive skipped steps
    dist_timeout: float = 600.0  # seconds a collective may wait for another process before failing

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "eval_batch_size"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"train.{name} must be a positive integer, got {value!r}")
        for name in ("log_every", "eval_every", "eval_max_tokens", "save_every"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 0, f"train.{name} must be >= 0, got {value!r}")
        _require(self.max_time >= 0, f"train.max_time must be >= 0, got {self.max_time!r}")
        _require(0 <= self.input_noise < 1, f"train.input_noise must be in [0, 1), got {self.input_noise!r}")
        _require(0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        _require(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        _require(self.streams in TRAIN_STREAMS, f"train.streams must be one of {TRAIN_STREAMS}, got {self.streams!r}")
        _require(self.batch_size % self.grad_accum == 0,
                 f"train.batch_size={self.batch_size} must be divisible by train.grad_accum={self.grad_accum}")
        _require(self.nan_policy in NAN_POLICIES,
                 f"train.nan_policy must be one of {NAN_POLICIES}, got {self.nan_policy!r}")
        _require(isinstance(self.max_bad_steps, int) and self.max_bad_steps > 0,
                 f"train.max_bad_steps must be a positive integer, got {self.max_bad_steps!r}")
        _require(self.dist_timeout > 0, f"train.dist_timeout must be > 0 seconds, got {self.dist_timeout!r}")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluation lengths and extent; None means the checkpoint's training value."""

    split: str = "test"  # which split of the prepared data
    batch_size: int = 1  # parallel streams; every token is still scored exactly once
    seg_len: int | None = None  # tokens per segment (None: the training seg_len)
    mem_len: int | None = None  # memory length (None: the training mem_len)
    clamp_len: int | None = None  # clamp relative distances (None: the training value)
    same_length: bool | None = None  # every query sees the same number of keys (None: training value)
    warmup: int = 0  # tokens of context before each stream's first scored token (full memory)
    max_tokens: int = 0  # score at most this many tokens (0: the whole split)

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, f"eval.batch_size must be positive, got {self.batch_size!r}")
        _require(self.seg_len is None or self.seg_len > 0, f"eval.seg_len must be positive, got {self.seg_len!r}")
        _require(self.mem_len is None or self.mem_len >= 0, f"eval.mem_len must be >= 0, got {self.mem_len!r}")
        _require(self.warmup >= 0 and self.max_tokens >= 0,
                 f"eval.warmup and eval.max_tokens must be >= 0, got {self.warmup}, {self.max_tokens}")


def _section_from_dict(cls: type, data: Mapping[str, Any], section: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    _require(not unknown, f"unknown {section} field(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**dict(data))
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a training run needs besides the data: saved with every checkpoint (run.json)."""

    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    SECTIONS = {"optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}

    def __post_init__(self) -> None:
        _require(self.optim.decay_clock != "time" or self.train.max_time > 0,
                 "optim.decay_clock 'time' decays the learning rate over train.max_time: set train.max_time "
                 "(seconds), or use decay_clock 'steps'")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "optim": dataclasses.asdict(self.optim),
                "train": dataclasses.asdict(self.train), "eval": dataclasses.asdict(self.eval)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        unknown = sorted(set(data) - {"model", *cls.SECTIONS})
        _require(not unknown, f"unknown config section(s) {unknown}; known: model, optim, train, eval")
        _require("model" in data, "the run config has no [model] section")
        _require(isinstance(data["model"], Mapping), f"[model] must be a table, got {type(data['model']).__name__}")
        model = ModelConfig.from_dict(data["model"])
        sections = {name: _section_from_dict(kind, data.get(name, {}), name) for name, kind in cls.SECTIONS.items()}
        return cls(model=model, **sections)


def load_toml(path: str | Path) -> dict[str, Any]:
    """A value-only TOML run file as a dict of sections (unknown keys are caught when applied)."""
    import tomllib

    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes UTF-8 itself and lets this through
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc})") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a .toml file") from None
