"""Drop-in classes for code written against transformers' removed TransfoXL (transformers <= 4.x).

Change one import line and keep the rest of the code::

    from transformer_xl.compat import TransfoXLLMHeadModel, TransfoXLTokenizer   # was: from transformers import

    tokenizer = TransfoXLTokenizer.from_pretrained("transfo-xl/transfo-xl-wt103")
    model = TransfoXLLMHeadModel.from_pretrained("transfo-xl/transfo-xl-wt103")
    out = model(torch.tensor([tokenizer.encode("Hello , world")]))   # out.prediction_scores, out.mems

The classes follow transformers 4.37.2's call signatures, output fields and tuple order, and its memory
conventions (``mems`` are per-layer ``(mem_len, batch, d_model)`` tensors, zero-filled on the first call),
but they run this project's model (:class:`~transformer_xl.model.TransformerXLLM`) and tokenizer
(:class:`~transformer_xl.data.vocab.Vocabulary` with the WikiText rules). Nothing is unpickled as code:
weights come from safetensors or ``torch.load(weights_only=True)``, vocab.pkl through the inert reader of
:mod:`transformer_xl.interop.hf_vocab`, and ``save_pretrained`` writes JSON and safetensors.

Differences: ``head_mask`` and ``inputs_embeds`` are refused with an error (not silently ignored); the
span set by ``reset_memory_length`` belongs to the compat object (the shared model config never changes);
``generate`` supports greedy decoding and sampling (temperature, top-k, top-p), not beam search.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from .config import ModelConfig, TransformerXLError
from .data.vocab import Vocabulary
from .interop.hf import config_from_hf, export_hf, load_hf_state, state_dict_from_hf, zero_memory
from .interop.hf_vocab import load_hf_vocabulary, write_hf_vocabulary
from .model import Memory, TransformerXLLM
from .pretrained import assign_state, check_state_against_config, read_json

__all__ = ["TransfoXLConfig", "TransfoXLModel", "TransfoXLLMHeadModel", "TransfoXLTokenizer",
           "TransfoXLModelOutput", "TransfoXLLMHeadModelOutput"]


def _folder(name_or_path: str | Path, **hub_kwargs: Any) -> Path:
    from .interop.hub import resolve_hf_source

    return resolve_hf_source(name_or_path, **hub_kwargs)


def _hub_kwargs(kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """The from_pretrained keywords we honour; any other one is refused by name."""
    out = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
    kwargs.pop("use_safetensors", None)  # both formats are read safely; safetensors first
    if kwargs:
        raise TransformerXLError(f"{what}.from_pretrained does not support {sorted(kwargs)}; the compat classes "
                                 "take a folder or hub id and revision/cache_dir/local_files_only")
    return out


# Config -----------------------------------------------------------------------------------------------
class TransfoXLConfig:
    """The fields of transformers' TransfoXLConfig (same names and defaults: the WikiText-103 model's)."""

    model_type = "transfo-xl"

    def __init__(self, vocab_size: int = 267735, cutoffs: Sequence[int] = (20000, 40000, 200000),
                 d_model: int = 1024, d_embed: int = 1024, n_head: int = 16, d_head: int = 64, d_inner: int = 4096,
                 div_val: int = 4, pre_lnorm: bool = False, n_layer: int = 18, mem_len: int = 1600,
                 clamp_len: int = 1000, same_length: bool = True, proj_share_all_but_first: bool = True,
                 attn_type: int = 0, sample_softmax: int = -1, adaptive: bool = True, dropout: float = 0.1,
                 dropatt: float = 0.0, untie_r: bool = True, init: str = "normal", init_range: float = 0.01,
                 proj_init_std: float = 0.01, init_std: float = 0.02, layer_norm_epsilon: float = 1e-5,
                 eos_token_id: int = 0, **kwargs: Any) -> None:
        self.vocab_size, self.cutoffs = vocab_size, list(cutoffs)
        self.d_model, self.d_embed, self.n_head, self.d_head, self.d_inner = d_model, d_embed, n_head, d_head, d_inner
        self.div_val, self.pre_lnorm, self.n_layer, self.mem_len = div_val, pre_lnorm, n_layer, mem_len
        self.clamp_len, self.same_length, self.attn_type = clamp_len, same_length, attn_type
        self.proj_share_all_but_first = proj_share_all_but_first
        self.tie_projs = [False] + [bool(proj_share_all_but_first)] * len(self.cutoffs)
        self.sample_softmax, self.adaptive, self.dropout, self.dropatt = sample_softmax, adaptive, dropout, dropatt
        self.untie_r, self.init, self.init_range = untie_r, init, init_range
        self.proj_init_std, self.init_std, self.layer_norm_epsilon = proj_init_std, init_std, layer_norm_epsilon
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = bool(kwargs.pop("tie_word_embeddings", True))
        self.output_attentions = bool(kwargs.pop("output_attentions", False))
        self.output_hidden_states = bool(kwargs.pop("output_hidden_states", False))
        self.return_dict = bool(kwargs.pop("return_dict", True))
        self.torchscript = bool(kwargs.pop("torchscript", False))
        self.pad_token_id = kwargs.pop("pad_token_id", None)
        for key, value in kwargs.items():  # what config.json carries besides (architectures, tgt_len, ...)
            setattr(self, key, value)
        if "tie_projs" in kwargs:
            self.tie_projs = [bool(t) for t in kwargs["tie_projs"]]

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict and not self.torchscript

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return -1  # no limit: relative positions

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        out["model_type"] = self.model_type
        return out

    def to_model_config(self) -> ModelConfig:
        """This project's ModelConfig for these fields (refusing what the model cannot run)."""
        return config_from_hf(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "TransfoXLConfig":
        values = {k: v for k, v in data.items() if k != "model_type"}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> "TransfoXLConfig":
        hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
        path = Path(name_or_path)
        file = path if path.is_file() else _folder(name_or_path, **hub) / "config.json"
        data = read_json(file, what="Hugging Face config")
        if data.get("model_type", "transfo-xl") != "transfo-xl":
            raise TransformerXLError(f"{file} is a {data.get('model_type')!r} config, not a TransfoXL one")
        return cls.from_dict(data, **kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def __repr__(self) -> str:
        return f"TransfoXLConfig({json.dumps(self.to_dict(), sort_keys=True)})"


# Outputs ----------------------------------------------------------------------------------------------
class _Output:
    """transformers' ModelOutput behaviour: attribute and key access, and ``to_tuple``/indexing over the
    fields that are not None, in declaration order."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return value
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.to_tuple())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return list(self.to_tuple())

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self.keys(), self.to_tuple()))


@dataclass
class TransfoXLModelOutput(_Output):
    last_hidden_state: Tensor
    mems: list[Tensor] | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class TransfoXLLMHeadModelOutput(_Output):
    losses: Tensor | None = None
    prediction_scores: Any = None
    mems: list[Tensor] | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    loss: Tensor | None = None

    @property
    def logits(self) -> Any:
        return self.prediction_scores


# Models -----------------------------------------------------------------------------------------------
def _load_model(directory: Path, model_config: ModelConfig, *, head: bool) -> TransformerXLLM:
    """Our model from a Hugging Face folder saved by TransfoXLLMHeadModel (``transformer.*`` + ``crit.*``)
    or by TransfoXLModel (no prefix, no softmax: the softmax keeps its fresh initialisation)."""
    state = load_hf_state(directory)
    if state and not any(k.startswith("transformer.") for k in state):
        state = {("transformer." + k): v for k, v in state.items()}
    model = TransformerXLLM(model_config)
    if not any(k.startswith("crit.") for k in state):
        if head:
            raise TransformerXLError(f"{directory} holds a TransfoXLModel without its softmax (crit.*); load it "
                                     "with TransfoXLModel, or use a TransfoXLLMHeadModel checkpoint")
        state.update({name: p.detach() for name, p in model.named_parameters() if name.startswith("crit.")})
    ours = state_dict_from_hf(state, model_config, source=directory)
    check_state_against_config(model_config, {k: tuple(v.shape) for k, v in ours.items()}, source=directory,
                               config_source=directory / "config.json")
    assign_state(model, ours, source=directory)
    return model


class TransfoXLModel(nn.Module):
    """transformers' TransfoXLModel: hidden states and memories (no softmax)."""

    def __init__(self, config: TransfoXLConfig, *, _xl: TransformerXLLM | None = None) -> None:
        super().__init__()
        self._config = config
        self.xl = TransformerXLLM(config.to_model_config()) if _xl is None else _xl
        self.mem_len = config.mem_len
        self.same_length = config.same_length
        self.clamp_len = config.clamp_len
        self.n_layer, self.d_model, self.n_head, self.d_head = config.n_layer, config.d_model, config.n_head, \
            config.d_head

    @property
    def config(self) -> TransfoXLConfig:
        """The Hugging Face-style config (read-only here: a call's span is set with reset_memory_length)."""
        return self._config

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> Any:
        config = kwargs.pop("config", None)
        hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
        kwargs.pop("use_safetensors", None)  # both formats are read safely; safetensors first
        directory = _folder(name_or_path, **hub)
        if config is None:  # other keywords override the saved config's fields, as in transformers
            config = TransfoXLConfig.from_pretrained(directory, **kwargs)
        elif kwargs:
            raise TransformerXLError(f"{cls.__name__}.from_pretrained got config= and also {sorted(kwargs)}; set "
                                     "those fields on the config instead")
        xl = _load_model(directory, config.to_model_config(), head=cls is TransfoXLLMHeadModel)
        return cls(config, _xl=xl).eval()

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors in Hugging Face's layout (loadable by transformers 4.x too)."""
        export_hf(self.xl, directory)

    def get_input_embeddings(self) -> nn.Module:
        return self.xl.word_emb

    def num_parameters(self) -> int:
        return self.xl.num_parameters()

    @property
    def word_emb(self) -> nn.Module:
        return self.xl.word_emb

    @property
    def layers(self) -> nn.ModuleList:
        return self.xl.layers

    def reset_memory_length(self, mem_len: int) -> None:
        """The memory length of later calls on this object (the model's config is not changed)."""
        if not isinstance(mem_len, int) or isinstance(mem_len, bool) or mem_len < 0:
            raise TransformerXLError(f"mem_len must be a non-negative integer, got {mem_len!r}")
        self.mem_len = mem_len

    def init_mems(self, bsz: int) -> list[Tensor] | None:
        """Zero-filled memories (mem_len, bsz, d_model) per layer, or None when mem_len is 0."""
        if self.mem_len <= 0:
            return None
        return [m.transpose(0, 1) for m in zero_memory(self.xl, bsz, mem_len=self.mem_len).states]

    def _core(self, input_ids: Tensor | None, mems: Sequence[Tensor] | None, head_mask: Any, inputs_embeds: Any,
              output_attentions: bool | None, output_hidden_states: bool | None
              ) -> tuple[Tensor, list[Tensor] | None, tuple | None, tuple | None]:
        if head_mask is not None:
            raise TransformerXLError("head_mask is not supported by transformer_xl.compat; pass head_mask=None")
        if inputs_embeds is not None:
            raise TransformerXLError("inputs_embeds is not supported by transformer_xl.compat; pass input_ids")
        if input_ids is None:
            raise TransformerXLError("You have to specify input_ids (a (batch, length) tensor of token ids)")
        if not isinstance(input_ids, Tensor):
            input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2:
            raise TransformerXLError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        attentions = self.config.output_attentions if output_attentions is None else bool(output_attentions)
        hidden = self.config.output_hidden_states if output_hidden_states is None else bool(output_hidden_states)
        bsz = input_ids.shape[0]
        if mems is None:
            mems = self.init_mems(bsz)
        memory = None if mems is None else Memory(tuple(m.transpose(0, 1) for m in mems))  # (M, B, C) -> (B, M, C)
        mlen = 0 if memory is None else memory.length
        out = self.xl(input_ids, memory=memory, mem_len=self.mem_len, clamp_len=self.clamp_len,
                      same_length=self.same_length, ext_len=0, return_hidden=True,
                      return_attentions=attentions, return_layer_outputs=hidden)
        new_mems = None
        if mems is not None:  # Hugging Face keeps the last min(mem_len, M + T) positions
            if out.memory is not None:
                new_mems = [m.transpose(0, 1) for m in out.memory.states]  # (B, M', C) -> (M', B, C)
            else:  # mem_len 0 with memories given: empty memories, as Hugging Face returns
                new_mems = [m[mlen:].detach() for m in mems]
        hids = tuple(out.layer_outputs) if hidden else None
        attns = tuple(out.attentions) if attentions else None
        return out.hidden, new_mems, hids, attns

    def forward(self, input_ids: Tensor | None = None, mems: Sequence[Tensor] | None = None, head_mask: Any = None,
                inputs_embeds: Any = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None) -> Any:
        last, new_mems, hids, attns = self._core(input_ids, mems, head_mask, inputs_embeds, output_attentions,
                                                 output_hidden_states)
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        if not return_dict:
            return tuple(v for v in (last, new_mems, hids, attns) if v is not None)
        return TransfoXLModelOutput(last_hidden_state=last, mems=new_mems, hidden_states=hids, attentions=attns)


class TransfoXLLMHeadModel(nn.Module):
    """transformers' TransfoXLLMHeadModel: log-probabilities (``prediction_scores``) and per-token losses."""

    from_pretrained = classmethod(TransfoXLModel.from_pretrained.__func__)  # type: ignore[attr-defined]

    def __init__(self, config: TransfoXLConfig, *, _xl: TransformerXLLM | None = None) -> None:
        super().__init__()
        self._config = config
        self.transformer = TransfoXLModel(config, _xl=_xl)
        self.trainer_compatible = bool(getattr(config, "trainer_compatible", False))

    @property
    def config(self) -> TransfoXLConfig:
        """The Hugging Face-style config (read-only here: a call's span is set with reset_memory_length)."""
        return self._config

    @property
    def xl(self) -> TransformerXLLM:
        """The project's model underneath (its native API: memory starts empty, span as call arguments)."""
        return self.transformer.xl

    @property
    def crit(self) -> nn.Module:
        return self.xl.crit

    def save_pretrained(self, directory: str | Path) -> None:
        export_hf(self.xl, directory)

    def num_parameters(self) -> int:
        return self.xl.num_parameters()

    def get_output_embeddings(self) -> nn.Module:
        return self.crit.out_layers[-1]

    def reset_memory_length(self, mem_len: int) -> None:
        self.transformer.reset_memory_length(mem_len)

    def init_mems(self, bsz: int) -> list[Tensor] | None:
        return self.transformer.init_mems(bsz)

    def _losses(self, hidden: Tensor, labels: Tensor) -> Tensor:
        """Hugging Face's shifted per-token NLL: position t predicts labels[:, t + 1]; -100 gives 0."""
        if not isinstance(labels, Tensor) or labels.shape != hidden.shape[:2]:
            raise TransformerXLError(f"labels must be a (batch, length) tensor like input_ids "
                                     f"{tuple(hidden.shape[:2])}, got {getattr(labels, 'shape', labels)}")
        labels = labels.to(hidden.device).long()
        if bool((labels[0, 1:] == -100).all()):  # Hugging Face puts <eos> here so the mean is not NaN
            labels = labels.clone()
            labels[0, 1] = self.config.eos_token_id
        target = labels[:, 1:]  # (B, T-1)
        ignored = target == -100
        vocab = self.xl.config.n_token
        if bool(((target < 0) & ~ignored).any()) or bool((target >= vocab).any()):
            raise TransformerXLError(f"labels must lie in [0, {vocab}) or be -100 (ignored)")
        flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), C)
        nll = self.crit(flat, target.masked_fill(ignored, 0).reshape(-1)).view(target.shape)  # (B, T-1)
        return nll.masked_fill(ignored, 0.0)

    def forward(self, input_ids: Tensor | None = None, mems: Sequence[Tensor] | None = None, head_mask: Any = None,
                inputs_embeds: Any = None, labels: Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None) -> Any:
        last, new_mems, hids, attns = self.transformer._core(input_ids, mems, head_mask, inputs_embeds,
                                                             output_attentions, output_hidden_states)
        bsz, tgt_len = last.shape[:2]
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        if labels is None:
            flat = last.reshape(-1, last.shape[-1])  # (B*T, C)
            scores: Any = self.crit.log_probs(flat).view(bsz, tgt_len, -1)  # (B, T, V)
            losses = loss = None
        else:
            scores = ()  # as Hugging Face: no scores when labels are given
            losses = self._losses(last, labels)
            loss = losses[losses != 0].mean()
        rest = tuple(v for v in (new_mems, hids, attns) if v is not None)
        if not return_dict:
            if self.trainer_compatible:
                output = ((scores, losses) if losses is not None else (scores,)) + rest
                return ((loss,) + output) if loss is not None else output
            output = (scores, *rest)
            output = ((losses,) + output) if losses is not None else output
            return (output + (loss,)) if loss is not None else output
        return TransfoXLLMHeadModelOutput(losses=losses, prediction_scores=scores, mems=new_mems,
                                          hidden_states=hids, attentions=attns, loss=loss)

    # Generation -------------------------------------------------------------------------------------
    _GENERATE_KEYS = frozenset({"attention_mask", "use_cache", "output_scores", "return_dict_in_generate"})

    @torch.no_grad()
    def generate(self, input_ids: Tensor | None = None, *, max_length: int | None = None,
                 max_new_tokens: int | None = None, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int = 50, top_p: float = 1.0, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, num_beams: int = 1, **kwargs: Any) -> Tensor:
        """transformers' ``generate`` for greedy decoding (``do_sample=False``) and sampling (temperature,
        then top-k, then top-p, as its warpers), carrying ``mems`` between steps as it does: the first step
        reads the whole prompt with zero-filled memories, each later step the last token only. Stops at
        ``max_length`` tokens in all (default 20) or ``max_new_tokens``; a row that produced ``eos_token_id``
        (None: the config's, as in transformers) continues with ``pad_token_id``. Returns (batch, length) ids."""
        unknown = sorted(set(kwargs) - self._GENERATE_KEYS)
        if unknown:
            raise TransformerXLError(f"generate() does not support {unknown} in transformer_xl.compat; it supports "
                                     "max_length, max_new_tokens, do_sample, temperature, top_k, top_p, "
                                     "eos_token_id, pad_token_id")
        if num_beams != 1:
            raise TransformerXLError("beam search (num_beams > 1) is not supported by transformer_xl.compat")
        if kwargs.get("return_dict_in_generate") or kwargs.get("output_scores"):
            raise TransformerXLError("return_dict_in_generate / output_scores are not supported; generate "
                                     "returns the ids")
        if input_ids is None:
            raise TransformerXLError("generate needs input_ids (a (batch, length) tensor with the prompt)")
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if do_sample:
            if not temperature > 0:
                raise TransformerXLError(f"temperature must be > 0 when sampling, got {temperature}")
            if not 0 < top_p <= 1:
                raise TransformerXLError(f"top_p must lie in (0, 1], got {top_p}")
            if top_k is not None and top_k < 0:
                raise TransformerXLError(f"top_k must be >= 0, got {top_k}")
        if eos_token_id is None:  # as transformers: None means the config's
            eos_token_id = self.config.eos_token_id
        if pad_token_id is None:
            pad_token_id = self.config.pad_token_id if self.config.pad_token_id is not None else eos_token_id
        limit = input_ids.shape[1] + max_new_tokens if max_new_tokens is not None else (max_length or 20)
        ids = input_ids.to(next(self.parameters()).device)
        unfinished = torch.ones(ids.shape[0], dtype=torch.long, device=ids.device)
        mems = None
        while ids.shape[1] < limit:
            step_ids = ids if mems is None else ids[:, -1:]
            out = self(step_ids, mems=mems, return_dict=True)
            mems = out.mems
            scores = out.prediction_scores[:, -1, :]  # (B, V) log-probabilities
            if do_sample:
                next_ids = torch.multinomial(torch.softmax(_warp(scores, temperature, top_k, top_p), dim=-1),
                                             num_samples=1).squeeze(1)
            else:
                next_ids = scores.argmax(dim=-1)
            if eos_token_id is not None:
                next_ids = next_ids * unfinished + pad_token_id * (1 - unfinished)
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            if eos_token_id is not None:
                unfinished = unfinished * (next_ids != eos_token_id).long()
                if int(unfinished.max()) == 0:
                    break
        return ids


def _warp(scores: Tensor, temperature: float, top_k: int | None, top_p: float) -> Tensor:
    """transformers' sampling warpers in their order: temperature, top-k, top-p (masked entries -inf)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k).values[..., -1, None]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)  # (B, V) ascending
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p)
        drop[..., -1:] = False  # keep at least the most likely token
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


# Tokenizer --------------------------------------------------------------------------------------------
class Encoding(dict):
    """What ``tokenizer(text)`` returns: a dict with ``input_ids`` (also an attribute)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class TransfoXLTokenizer:
    """transformers' word-level TransfoXLTokenizer (the WikiText rules with sacremoses) over this project's
    :class:`~transformer_xl.data.vocab.Vocabulary`; vocab.pkl is read without executing it and
    ``save_pretrained`` writes JSON (vocab.json, plus vocab.txt), never a pickle."""

    model_input_names = ["input_ids"]

    def __init__(self, vocab: Vocabulary | None = None, *, vocab_file: str | Path | None = None) -> None:
        if vocab is None:
            if vocab_file is None:
                raise TransformerXLError("TransfoXLTokenizer needs a vocabulary: use from_pretrained(folder or hub "
                                         "id) or TransfoXLTokenizer(vocab_file='vocab.txt')")
            from .interop.hf_vocab import read_hf_text_vocab

            vocab = read_hf_text_vocab(vocab_file)
        if vocab.kind != "word" or vocab.normalization != "wikitext":
            raise TransformerXLError("TransfoXLTokenizer wraps a word vocabulary with the WikiText rules; load "
                                     "other vocabularies with transformer_xl.load_tokenizer")
        self.vocab = vocab
        self.idx2sym = list(vocab.symbols)
        self.sym2idx = {s: i for i, s in enumerate(self.idx2sym)}
        self.lower_case = vocab.lower
        self.eos_token = vocab.specials.get("eos")
        self.unk_token = vocab.specials.get("unk")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> "TransfoXLTokenizer":
        hub = _hub_kwargs(kwargs, cls.__name__)
        directory = _folder(name_or_path, **hub)
        vocab = load_hf_vocabulary(directory)
        if vocab is None:
            raise TransformerXLError(f"{directory} holds no TransfoXL vocabulary (vocab.json, vocab.pkl, vocab.bin "
                                     "or vocab.txt)")
        return cls(vocab)

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """vocab.json (exact) and vocab.txt into ``directory``; JSON and text only, no pickle."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return tuple(str(directory / name) for name in write_hf_vocabulary(self.vocab, directory))

    # -- sizes and special tokens
    @property
    def vocab_size(self) -> int:
        return len(self.idx2sym)

    def __len__(self) -> int:
        return len(self.idx2sym)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.sym2idx)

    @property
    def do_lower_case(self) -> bool:
        return self.lower_case

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.sym2idx[self.eos_token]

    @property
    def unk_token_id(self) -> int | None:
        return None if self.unk_token is None else self.sym2idx[self.unk_token]

    @property
    def all_special_tokens(self) -> list[str]:
        return [t for t in (self.eos_token, self.unk_token) if t is not None]

    @property
    def all_special_ids(self) -> list[int]:
        return [self.sym2idx[t] for t in self.all_special_tokens]

    # -- text <-> tokens <-> ids
    def tokenize(self, text: str) -> list[str]:
        """Words of ``text`` as Hugging Face's tokenizer splits them (Moses rules, ``@,@`` numbers)."""
        if not isinstance(text, str):
            raise TransformerXLError(f"tokenize takes a string, got {type(text).__name__}")
        if self.lower_case:
            text = text.lower()
        return self.vocab._wikitext().split_line(text)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        table = self.vocab.lookup("in the text")
        if isinstance(tokens, str):
            return table[tokens]
        return [table[t] for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False
                              ) -> str | list[str]:
        if isinstance(ids, int) or (isinstance(ids, Tensor) and ids.dim() == 0):
            return self.idx2sym[int(ids)]
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.idx2sym[int(i)] for i in ids if int(i) not in special]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return self.vocab._wikitext().join_line(list(tokens))

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None,
               **kwargs: Any) -> Any:
        if kwargs:
            raise TransformerXLError(f"encode does not support {sorted(kwargs)} in transformer_xl.compat")
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        if return_tensors is None:
            return ids
        if return_tensors != "pt":
            raise TransformerXLError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        return torch.tensor([ids], dtype=torch.long)

    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        if isinstance(token_ids, Tensor):
            token_ids = token_ids.reshape(-1).tolist()
        elif isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(list(token_ids), skip_special_tokens))
        if clean_up_tokenization_spaces is None or clean_up_tokenization_spaces:
            for before, after in _CLEANUPS:
                text = text.replace(before, after)
        return text

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        return [self.decode(seq, **kwargs) for seq in sequences]

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True, return_tensors: str | None = None,
                 **kwargs: Any) -> Encoding:
        if kwargs:
            raise TransformerXLError(f"the tokenizer call does not support {sorted(kwargs)} in "
                                     "transformer_xl.compat (no padding or truncation: TransfoXL has no pad token)")
        single = isinstance(text, str)
        rows = [self.encode(t) for t in ([text] if single else text)]
        if return_tensors is None:
            return Encoding(input_ids=rows[0] if single else rows)
        if return_tensors != "pt":
            raise TransformerXLError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        if len({len(r) for r in rows}) > 1:
            raise TransformerXLError("the texts have different lengths in tokens and TransfoXL has no pad token; "
                                     "encode them one at a time")
        return Encoding(input_ids=torch.tensor(rows, dtype=torch.long))

