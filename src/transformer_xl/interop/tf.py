"""The original release's TensorFlow checkpoints (kimiyoung/transformer-xl, ``tf/``) -> our model.

The paper's state-of-the-art models (enwik8 and text8 24 layers, WikiText-103 large, One Billion Word
large) were released as TensorFlow V2 checkpoints (``tf/sota/download.sh``). They are read with the
pure-Python reader in :mod:`.tf_checkpoint` (no TensorFlow needed) and mapped variable by variable:

=====================================================  ===============================================
TensorFlow variable (``tf/model.py`` scopes)           ours
=====================================================  ===============================================
transformer/adaptive_embed/lookup_table                word_emb.emb_layers.0.weight (plain layout)
transformer/adaptive_embed/proj_W                      word_emb.emb_projs.0, transposed
transformer/adaptive_embed/cutoff_{k}/lookup_table     word_emb.emb_layers.{k}.weight (adaptive layout)
transformer/adaptive_embed/cutoff_{k}/proj_W           word_emb.emb_projs.{k}, transposed
transformer/adaptive_softmax/bias                      crit.out_layers.0.bias (plain layout)
transformer/adaptive_softmax/cutoff_{k}/b              crit.out_layers.{k}.bias (div_val 1: one bias,
                                                       the clusters' concatenated)
transformer/adaptive_softmax/cutoff_0/cluster_{W,b}    crit.cluster_{weight,bias} (natural order)
transformer/adaptive_softmax/cutoff_{k}/proj           crit.out_projs.{k}, transposed (untied)
transformer/r_{w,r}_bias  (H, D) or (L, H, D)          r_{w,r}_bias, or layers.{i}.dec_attn.r_{w,r}_bias
transformer/layer_{i}/rel_attn/{qkv,r,o}/kernel        layers.{i}.dec_attn.{qkv,r,o}_net.weight, transposed
transformer/layer_{i}/rel_attn/LayerNorm/{gamma,beta}  layers.{i}.dec_attn.layer_norm.{weight,bias}
transformer/layer_{i}/ff/layer_{1,2}/{kernel,bias}     layers.{i}.pos_ff.CoreNet.{0,3}.{weight,bias}
transformer/layer_{i}/ff/LayerNorm/{gamma,beta}        layers.{i}.pos_ff.layer_norm.{weight,bias}
=====================================================  ===============================================

The TensorFlow softmax always reuses the embedding tables (tie_weight). A softmax projection that is
absent is the embedding's (tied) when the embedding has one, else no projection; where our adaptive
layout keeps a projection that TensorFlow left out (``proj_same_dim=False``: lm1b's first cluster) it
is the identity matrix, which changes no number. Adam slots (``*/Adam``, ``*/Adam_1``),
``beta1_power``, ``beta2_power`` and ``global_step`` are training state and skipped; any other
variable is refused by name.

Everything structural (layers, sizes, heads, cutoffs, div_val, untied u/v, tied projections) is read
from the shapes. What shapes cannot tell: the lengths the model is run with (``--preset`` gives the
released evaluation settings of the ``tf/sota`` scripts) and the dropout used to train it. A preset is
also checked field by field against the checkpoint. Two differences to know: TensorFlow's layer norm
adds 1e-12 to the variance, ours 1e-5 (a relative change near 1e-6 of hidden states of unit scale), and
the original evaluation starts from a zero-filled memory where ours starts empty.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import ModelConfig, Span, TransformerXLError
from ..model import TransformerXLLM
from ..pretrained import assign_state, check_state_against_config
from .tf_checkpoint import TFCheckpoint

__all__ = ["TF_RELEASES", "config_from_tf", "import_tf", "tf_state_dict"]

# The released checkpoints (tf/sota/*.sh): our preset of the same model, the flags the TensorFlow run used
# that differ from that preset, and the evaluation lengths of the sota script.
TF_RELEASES: dict[str, tuple[dict[str, Any], Span]] = {
    "enwik8-large": ({}, Span(seg_len=128, mem_len=3800, clamp_len=1000, same_length=True)),
    "text8-large": ({}, Span(seg_len=128, mem_len=3800, clamp_len=1000, same_length=True)),
    "wt103-large": ({"untie_rel_bias": True}, Span(seg_len=128, mem_len=1600, clamp_len=1000, same_length=True)),
    "lm1b-large": ({"untie_rel_bias": True}, Span(seg_len=32, mem_len=128, clamp_len=-1, same_length=True)),
}

_T = "transformer/"
_SKIPPED = re.compile(r"(.*/(Adam|Adam_\d+)|global_step|beta[12]_power(_\d+)?)")
_LAYER = re.compile(r"transformer/layer_(\d+)/(.+)")
_CUTOFF = re.compile(r"transformer/adaptive_(embed|softmax)/cutoff_(\d+)/(.+)")
_LAYER_VARS = {  # TensorFlow name inside layer_{i} -> (our name inside layers.{i}, transpose)
    "rel_attn/qkv/kernel": ("dec_attn.qkv_net.weight", True),
    "rel_attn/r/kernel": ("dec_attn.r_net.weight", True),
    "rel_attn/o/kernel": ("dec_attn.o_net.weight", True),
    "rel_attn/LayerNorm/gamma": ("dec_attn.layer_norm.weight", False),
    "rel_attn/LayerNorm/beta": ("dec_attn.layer_norm.bias", False),
    "ff/layer_1/kernel": ("pos_ff.CoreNet.0.weight", True),
    "ff/layer_1/bias": ("pos_ff.CoreNet.0.bias", False),
    "ff/layer_2/kernel": ("pos_ff.CoreNet.3.weight", True),
    "ff/layer_2/bias": ("pos_ff.CoreNet.3.bias", False),
    "ff/LayerNorm/gamma": ("pos_ff.layer_norm.weight", False),
    "ff/LayerNorm/beta": ("pos_ff.layer_norm.bias", False),
}
_CUTOFF_VARS = {"embed": ("lookup_table", "proj_W"), "softmax": ("b", "proj", "cluster_W", "cluster_b")}


def _model_variables(ckpt: TFCheckpoint) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """{name: shape} of the model's variables, and the names skipped as training state. Refuses, by name,
    every variable that is neither."""
    shapes: dict[str, tuple[int, ...]] = {}
    skipped: list[str] = []
    for name in ckpt.names():
        if _SKIPPED.fullmatch(name):
            skipped.append(name)
            continue
        layer, cutoff = _LAYER.fullmatch(name), _CUTOFF.fullmatch(name)
        known = (name in {_T + "r_w_bias", _T + "r_r_bias", _T + "adaptive_embed/lookup_table",
                          _T + "adaptive_embed/proj_W", _T + "adaptive_softmax/bias"}
                 or (layer is not None and layer.group(2) in _LAYER_VARS)
                 or (cutoff is not None and cutoff.group(3) in _CUTOFF_VARS[cutoff.group(1)]
                     and (not cutoff.group(3).startswith("cluster_") or cutoff.group(2) == "0")))
        if not known:
            raise TransformerXLError(f"{ckpt.prefix}: the variable {name!r} is not part of the original "
                                     "Transformer-XL TensorFlow model (tf/model.py); refusing to convert a checkpoint "
                                     "of another model")
        if ckpt.entries[name].dtype != "float32":
            raise TransformerXLError(f"{ckpt.prefix}: {name} is {ckpt.entries[name].dtype}; the released models "
                                     "store float32")
        shapes[name] = ckpt.entries[name].shape
    return shapes, skipped


def _indices(shapes: dict[str, tuple[int, ...]], pattern: re.Pattern[str], group: int, what: str,
             source: Path) -> list[int]:
    found = sorted({int(m.group(group)) for m in map(pattern.fullmatch, shapes) if m is not None})
    if found != list(range(len(found))):
        raise TransformerXLError(f"{source}: the {what} are numbered {found[:10]}, not 0..{len(found) - 1}; "
                                 "the checkpoint is incomplete")
    return found


def _need(shapes: dict[str, tuple[int, ...]], name: str, source: Path, ndim: int) -> tuple[int, ...]:
    if name not in shapes:
        raise TransformerXLError(f"{source}: the variable {name} is missing; the checkpoint is incomplete")
    if len(shapes[name]) != ndim:
        raise TransformerXLError(f"{source}: {name} has shape {list(shapes[name])}, expected {ndim} dimensions")
    return shapes[name]


def config_from_tf(ckpt: TFCheckpoint, *, preset: str | None = None, seg_len: int | None = None,
                   mem_len: int | None = None, clamp_len: int | None = None, same_length: bool | None = None,
                   dropout: float | None = None, attn_dropout: float | None = None) -> ModelConfig:
    """Our ModelConfig for a TensorFlow checkpoint: the structure from its shapes; each length as given, else
    the released evaluation setting of ``preset``, else ModelConfig's default. A preset is checked against the
    shapes, field by field."""
    shapes, _ = _model_variables(ckpt)
    src = ckpt.prefix
    layers = _indices(shapes, _LAYER, 1, "layers", src)
    if not layers:
        raise TransformerXLError(f"{src} holds no transformer/layer_0 variables; it is not an original "
                                 "Transformer-XL TensorFlow checkpoint")
    n_layer = len(layers)
    r_w = shapes.get(_T + "r_w_bias")
    if r_w is None or len(r_w) not in (2, 3):
        raise TransformerXLError(f"{src}: transformer/r_w_bias is missing or not (H, D) / (L, H, D)")
    untie = len(r_w) == 3
    if shapes.get(_T + "r_r_bias") != r_w or (untie and r_w[0] != n_layer):
        raise TransformerXLError(f"{src}: transformer/r_w_bias {list(r_w)} and r_r_bias "
                                 f"{list(shapes.get(_T + 'r_r_bias', ()))} must both be (H, D), or (L, H, D) with L = "
                                 f"{n_layer} layers")
    n_head, d_head = r_w[-2:]
    d_model, qkv = _need(shapes, _T + "layer_0/rel_attn/qkv/kernel", src, 2)
    if qkv != 3 * n_head * d_head:
        raise TransformerXLError(f"{src}: qkv kernel width {qkv} is not 3 x n_head {n_head} x d_head {d_head}")
    d_inner = _need(shapes, _T + "layer_0/ff/layer_1/kernel", src, 2)[1]

    emb_clusters = _indices({k: v for k, v in shapes.items() if "adaptive_embed/cutoff_" in k}, _CUTOFF, 2,
                            "embedding clusters", src)
    sm_clusters = _indices({k: v for k, v in shapes.items() if "adaptive_softmax/cutoff_" in k}, _CUTOFF, 2,
                           "softmax clusters", src)
    if emb_clusters:  # adaptive layout: one table per cluster
        if len(emb_clusters) == 1:
            raise TransformerXLError(f"{src}: a single adaptive_embed/cutoff_0 cluster is not a layout the original "
                                     "writes for a model with cutoffs; not supported")
        sizes = [_need(shapes, f"{_T}adaptive_embed/cutoff_{k}/lookup_table", src, 2) for k in emb_clusters]
        d_embed = sizes[0][1]
        div_val = d_embed // sizes[1][1] if sizes[1][1] else 0
        if div_val < 2 or any(w != d_embed // div_val ** k for k, (_, w) in enumerate(sizes)):
            raise TransformerXLError(f"{src}: the embedding tables' widths {[w for _, w in sizes]} do not shrink by "
                                     "one factor div_val per cluster")
        bounds = [n for n, _ in sizes]
    else:
        n_tok, d_embed = _need(shapes, _T + "adaptive_embed/lookup_table", src, 2)
        div_val = 1
        bounds = ([_need(shapes, f"{_T}adaptive_softmax/cutoff_{k}/b", src, 1)[0] for k in sm_clusters]
                  if sm_clusters else [n_tok])
        if sum(bounds) != n_tok:
            raise TransformerXLError(f"{src}: the softmax clusters cover {sum(bounds)} tokens, the embedding {n_tok}")
    n_token = sum(bounds)
    cutoffs = tuple(sum(bounds[:k]) for k in range(1, len(bounds)))
    if cutoffs:
        if len(sm_clusters) != len(bounds):
            raise TransformerXLError(f"{src}: the embedding has {len(bounds)} clusters, the softmax {len(sm_clusters)}")
        for k, size in enumerate(bounds):
            if _need(shapes, f"{_T}adaptive_softmax/cutoff_{k}/b", src, 1) != (size,):
                raise TransformerXLError(f"{src}: adaptive_softmax/cutoff_{k}/b has shape "
                                         f"{list(shapes[f'{_T}adaptive_softmax/cutoff_{k}/b'])}, expected [{size}]")
    elif sm_clusters or _T + "adaptive_softmax/bias" not in shapes:
        raise TransformerXLError(f"{src}: the plain embedding layout needs transformer/adaptive_softmax/bias and no "
                                 "softmax clusters")

    # Projections: a softmax projection present is untied; absent, it is the embedding's (when there is one).
    def emb_proj(k: int) -> bool:
        return (f"{_T}adaptive_embed/cutoff_{k}/proj_W" if div_val > 1 else _T + "adaptive_embed/proj_W") in shapes

    undetermined: list[int] = []
    tie_projs = []
    for k in range(len(bounds)):
        if f"{_T}adaptive_softmax/cutoff_{k}/proj" in shapes:
            tie_projs.append(False)
        elif emb_proj(k if div_val > 1 else 0):
            tie_projs.append(True)
        else:  # no projection on either side: tied or not changes nothing
            tie_projs.append(k > 0)
            undetermined.append(k)

    values: dict[str, Any] = dict(
        n_token=n_token, n_layer=n_layer, n_head=n_head, d_model=d_model, d_head=d_head, d_inner=d_inner,
        d_embed=d_embed, cutoffs=cutoffs, div_val=div_val, tie_weight=True, tie_projs=tuple(tie_projs),
        untie_rel_bias=untie, pre_norm=False, attn_type="xl")
    if preset is not None:
        if preset not in TF_RELEASES:
            raise TransformerXLError(f"--preset {preset!r} is not a released TensorFlow model; choose one of "
                                     f"{', '.join(TF_RELEASES)} (or leave it out and give the lengths)")
        changes, release_span = TF_RELEASES[preset]
        expected = ModelConfig.preset(preset).replace(**changes)
        for k in undetermined:
            tie_projs[k] = expected.tie_projs[k] if k < len(expected.tie_projs) else tie_projs[k]
        values["tie_projs"] = tuple(tie_projs)
        for field in ("n_token", "n_layer", "n_head", "d_model", "d_head", "d_inner", "d_embed", "cutoffs",
                      "div_val", "untie_rel_bias", "tie_projs"):
            if field == "n_token" and not expected.cutoffs:
                continue  # a character set's size is the data's, not the model's: taken from the checkpoint
            if getattr(expected, field) != values[field]:
                raise TransformerXLError(f"{src} is not the released {preset} model: its {field} is {values[field]}, "
                                         f"the preset's {getattr(expected, field)}; check --preset")
        values.update(dropout=expected.dropout, attn_dropout=expected.attn_dropout)
        lengths = release_span.to_dict()
    else:
        lengths = {}
    given = dict(seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len, same_length=same_length)
    lengths.update({k: v for k, v in given.items() if v is not None})
    values.update(lengths)
    if dropout is not None:
        values["dropout"] = dropout
    if attn_dropout is not None:
        values["attn_dropout"] = attn_dropout
    try:
        return ModelConfig(**values)
    except TransformerXLError as exc:
        raise TransformerXLError(f"{src} does not make a valid model: {exc}") from None


def _identity(n: int) -> Tensor:
    return torch.eye(n, dtype=torch.float32)


def tf_state_dict(ckpt: TFCheckpoint, config: ModelConfig, *, verify: bool = True) -> dict[str, Tensor]:
    """Our state dict (canonical names) from the checkpoint's tensors, per the table in the module docstring."""
    read: Callable[[str], Tensor] = lambda name: ckpt.read(name, verify=verify)  # noqa: E731
    entries = ckpt.entries
    state: dict[str, Tensor] = {}
    for i in range(config.n_layer):
        for tf_name, (ours, transpose) in _LAYER_VARS.items():
            name = f"{_T}layer_{i}/{tf_name}"
            if name not in entries:
                raise TransformerXLError(f"{ckpt.prefix}: the variable {name} is missing; the checkpoint is incomplete")
            tensor = read(name)
            state[f"layers.{i}.{ours}"] = tensor.t().contiguous() if transpose else tensor
    for which in ("r_w_bias", "r_r_bias"):
        tensor = read(_T + which)
        if config.untie_rel_bias:
            for i in range(config.n_layer):
                state[f"layers.{i}.dec_attn.{which}"] = tensor[i].clone()
        else:
            state[which] = tensor
    d_model = config.d_model
    if config.div_val == 1:
        state["word_emb.emb_layers.0.weight"] = read(_T + "adaptive_embed/lookup_table")
        if config.d_embed != d_model:
            state["word_emb.emb_projs.0"] = read(_T + "adaptive_embed/proj_W").t().contiguous()
        if config.cutoffs:
            state["crit.out_layers.0.bias"] = torch.cat(
                [read(f"{_T}adaptive_softmax/cutoff_{k}/b") for k in range(config.n_clusters + 1)])
        else:
            state["crit.out_layers.0.bias"] = read(_T + "adaptive_softmax/bias")
        for k, tied in enumerate(config.tie_projs):
            if config.d_embed != d_model and not tied:
                state[f"crit.out_projs.{k}"] = read(f"{_T}adaptive_softmax/cutoff_{k}/proj").t().contiguous()
    else:
        for k, tied in enumerate(config.tie_projs):
            scope = f"{_T}adaptive_embed/cutoff_{k}/"
            state[f"word_emb.emb_layers.{k}.weight"] = read(scope + "lookup_table")
            state[f"word_emb.emb_projs.{k}"] = (read(scope + "proj_W").t().contiguous() if scope + "proj_W" in entries
                                                else _identity(d_model))
            state[f"crit.out_layers.{k}.bias"] = read(f"{_T}adaptive_softmax/cutoff_{k}/b")
            if not tied:
                proj = f"{_T}adaptive_softmax/cutoff_{k}/proj"
                state[f"crit.out_projs.{k}"] = read(proj).t().contiguous() if proj in entries else _identity(d_model)
    if config.cutoffs:
        state["crit.cluster_weight"] = read(f"{_T}adaptive_softmax/cutoff_0/cluster_W")
        state["crit.cluster_bias"] = read(f"{_T}adaptive_softmax/cutoff_0/cluster_b")
    return state


def import_tf(path: str | Path, *, preset: str | None = None, verify: bool = True,
              **config_values: Any) -> tuple[TransformerXLLM, list[str]]:
    """Our model (eval mode) from an original TensorFlow checkpoint (prefix, ``.index`` file or folder), and the
    names of the training-state variables it skipped (Adam slots, global_step). ``config_values`` are the
    lengths and dropouts of :func:`config_from_tf`; ``verify`` checks every tensor's CRC-32C."""
    ckpt = TFCheckpoint(path)
    config = config_from_tf(ckpt, preset=preset, **config_values)
    _, skipped = _model_variables(ckpt)
    state = tf_state_dict(ckpt, config, verify=verify)
    check_state_against_config(config, {k: tuple(v.shape) for k, v in state.items()}, source=ckpt.prefix,
                               config_source="the structure read from its shapes")
    model = TransformerXLLM(config)
    assign_state(model, state, source=ckpt.prefix)
    return model.eval(), skipped
