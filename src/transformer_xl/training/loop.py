"""train(): the training loop of the paper, with memory carried across segments.

One optimiser step reads the next segment of every stream. The local batch is split into
``grad_accum`` chunks of whole streams; each chunk has its own :class:`~transformer_xl.runner.SegmentRunner`
and so its own memory (the original's batch_chunk), and under DDP gradients are synchronised only on the
last chunk (no_sync). The loss is the mean over all tokens of the global batch, so one process on batch B
and W processes on B / W streams each compute the same gradient.

:func:`train` is a short sequence of named steps over one :class:`TrainState`, each a function here:

    state = setup(...)                   # model, optimiser, streams, runners; or all of them from last/
    while state.step < max_steps:
        outcome = forward_backward(state)    # next segment through each chunk's runner; clip; lr
        agree(state, outcome, signals)       # stop by time or signal, non-finite step: one collective
        apply_or_skip(state, outcome)        # the optimiser step, or a skip that restores the memory
        log_step(state, outcome)             # metrics.jsonl (and TensorBoard) on its cadence
        check_bad_steps(state, outcome)      # train.nan_policy
        interrupt(state, signals) / on_cadence(state)   # save and leave; or validate (best/), save (last/)
    finish(state)                        # a last validation and last/

With train.ema_decay the optimiser steps the training weights while validation, best/ and last/ see their
moving average (:mod:`.averaging`); a checkpoint's training state keeps the training weights for resume.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..config import RunConfig, TransformerXLError
from ..data.streams import Segment, TrainStreams, make_train_streams
from ..evaluation import evaluate
from ..kernels import apply_device_kernels
from ..model import Memory, TransformerXLLM
from ..pretrained import load_pretrained
from ..runner import SegmentRunner
from ..runtime import DistInfo, resolve_device
from . import distributed as D
from .averaging import WeightAverage
from .checkpoint import data_fingerprint, rng_state, save_checkpoint, set_rng_state
from .data import TrainData, load_data
from .distributed import say
from .metrics import MetricsLog
from .noise import noise_inputs, unigram_distribution
from .optim import build_optimizer
from .rundir import claim_run_directory
from .schedule import learning_rate
from .signals import StopSignals

__all__ = ["NonFiniteLossError", "TrainData", "TrainResult", "TrainState", "load_data", "train"]


@dataclass
class TrainResult:
    step: int  # optimiser steps done in the whole run
    losses: list[float] = field(default_factory=list)  # mean training loss of each step of this call
    valid_loss: float | None = None  # last validation loss
    best_valid_loss: float | None = None
    stopped_early: bool = False  # train.max_time ran out (or a signal came) before train.max_steps
    out: Path | None = None
    skipped_steps: int = 0  # steps of this call skipped for a non-finite loss or gradient (nan_policy=skip)
    interrupted: str | None = None  # "SIGTERM" / "SIGINT" when a signal stopped the run (last/ saved first)


class NonFiniteLossError(TransformerXLError):
    """Too many consecutive steps had a non-finite loss or gradient (train.nan_policy, max_bad_steps)."""


# --- the state of a run ------------------------------------------------------------------------------
class EpochReader:
    """Segments of this rank's streams, epoch after epoch; says when the memory must restart."""

    def __init__(self, streams: TrainStreams) -> None:
        self.streams = streams
        self._iter: Iterator[Segment] = iter(streams)

    def next(self) -> tuple[Segment, bool]:
        """(segment, new_epoch): at an epoch boundary the streams restart, so the memory must too."""
        try:
            return next(self._iter), False
        except StopIteration:
            self._iter = iter(self.streams)
            return next(self._iter), True


@dataclass
class TrainState:
    """Everything one training process holds between steps."""

    config: RunConfig
    data: TrainData
    out: Path | None
    device: torch.device
    info: DistInfo
    model: TransformerXLLM  # the bare model: checkpoints and validation
    ddp: nn.Module  # the model, or DDP around it (its no_sync)
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler with fp16, else None
    streams: TrainStreams
    reader: EpochReader
    runners: list[SegmentRunner]  # one per grad-accum chunk: its streams' memory
    metrics: MetricsLog
    result: TrainResult
    step: int = 0  # optimiser steps done
    best: float | None = None  # best validation loss
    last_saved: int | None = None  # step held by last/ (None: nothing saved yet)
    evaluated_at: int | None = None  # step of the last validation
    bad_run: int = 0  # consecutive non-finite steps
    pending: list[Tensor] = field(default_factory=list)  # step losses on the device, reduced at the next log
    tokens_since_log: int = 0
    log_lines: bool = False  # a plain line per metrics row (no progress bar: a log file, nohup)
    start_time: float = field(default_factory=time.perf_counter)
    last_log: float = field(default_factory=time.perf_counter)
    seconds_before: float = 0.0  # training seconds of the invocations this one resumed
    clock: float = 0.0  # training seconds of the whole run, as all ranks agreed at the last step
    unigram: Tensor | None = None  # with train.input_noise: the training split's token frequencies
    average: WeightAverage | None = None  # with train.ema_decay: the weights that validation and checkpoints use

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def run_seconds(self) -> float:
        """This rank's training seconds of the whole run so far (earlier invocations included)."""
        return self.seconds_before + time.perf_counter() - self.start_time

    def budget_seconds(self) -> float:
        """Seconds counted against train.max_time: a time-decayed schedule budgets the whole run (resumes
        included), otherwise max_time is per invocation."""
        if self.config.optim.decay_clock == "time":
            return self.run_seconds()
        return time.perf_counter() - self.start_time


@dataclass
class StepOutcome:
    """What one optimiser step did; the flags are the same on every rank once :func:`agree` ran."""

    loss: Tensor  # this rank's mean loss over its tokens, on the device (not synchronised)
    grad_norm: Tensor | None  # before clipping; None without clipping
    lr: float
    tokens: int  # tokens of the global batch
    previous_memory: list[Memory | None]  # per chunk, what a skipped step restores
    stop: bool = False  # train.max_time ran out
    signalled: bool = False  # SIGTERM or SIGINT arrived
    bad: bool = False  # non-finite loss or gradient (checked unless train.nan_policy=ignore)


# --- setup and resume --------------------------------------------------------------------------------
def check_run(config: RunConfig, data: TrainData, device: torch.device, info: DistInfo) -> None:
    """Refuse a run that cannot work, before anything is built."""
    tc, mc = config.train, config.model
    if tc.precision == "fp16" and device.type != "cuda":
        raise TransformerXLError("train.precision=fp16 needs CUDA (it uses a grad scaler); use bf16 on CPU")
    if data.vocab is not None and len(data.vocab) != mc.n_token:
        raise TransformerXLError(f"model.n_token={mc.n_token} but the data's vocabulary has {len(data.vocab)} "
                                 "tokens; leave model.n_token unset to take it from the data")
    top = int(np.max(data.train)) if len(data.train) else 0
    if top >= mc.n_token:
        raise TransformerXLError(f"the training data holds token id {top}, beyond model.n_token={mc.n_token}")
    local_batch = tc.batch_size // info.world_size
    if tc.batch_size % info.world_size or local_batch % tc.grad_accum:
        raise TransformerXLError(f"train.batch_size={tc.batch_size} must split evenly over {info.world_size} "
                                 f"process(es) and then into train.grad_accum={tc.grad_accum} chunks")


def build_model(config: RunConfig, info: DistInfo, device: torch.device,
                checkpoint: Path | None) -> TransformerXLLM:
    """The model to train, on ``device`` with its kernels: loaded from ``checkpoint``, or new from the seed."""
    tc = config.train
    if checkpoint is not None:
        model = load_pretrained(checkpoint, map_location=device).train()
    else:
        torch.manual_seed(tc.seed)  # same initial weights on every rank
        model = TransformerXLLM(config.model).to(device)
        torch.manual_seed(tc.seed + info.rank)  # ranks draw different dropout masks
    return apply_device_kernels(model, device)


def setup(config: RunConfig, data: TrainData, *, out: Path | None, resume: bool, device: torch.device,
          info: DistInfo, overwrite: bool = False, allow_new_data: bool = False) -> TrainState:
    """Model, optimiser, streams and one segment runner per chunk; with ``resume``, restored from out/last
    when it exists. See :func:`claim_run_directory` for ``resume`` and ``overwrite``."""
    tc, mc = config.train, config.model
    check_run(config, data, device, info)
    found = claim_run_directory(config, data, out, resume=resume, overwrite=overwrite, info=info,
                                allow_new_data=allow_new_data)
    checkpoint, saved = found if found is not None else (None, None)
    model = build_model(config, info, device, checkpoint)
    optimizer = build_optimizer(model, config.optim, precision=tc.precision)
    ddp = D.wrap_model(model, info, device, find_unused=mc.n_clusters > 0)
    forward: nn.Module = torch.compile(ddp) if tc.compile else ddp
    streams = make_train_streams(tc.streams, data.train, sentences=data.train_sentences, batch_size=tc.batch_size,
                                 seg_len=mc.seg_len, ext_len=mc.ext_len, seed=tc.seed, rank=info.rank,
                                 world_size=info.world_size, device=device)
    runners = [SegmentRunner(forward, span=mc.train_span, ext_len=mc.ext_len, use_kv_cache=False,
                             precision=tc.precision) for _ in range(tc.grad_accum)]
    state = TrainState(config=config, data=data, out=out, device=device, info=info, model=model, ddp=ddp,
                       optimizer=optimizer, scaler=torch.amp.GradScaler("cuda") if tc.precision == "fp16" else None,
                       streams=streams, reader=EpochReader(streams), runners=runners,
                       metrics=MetricsLog(None, info, False), result=TrainResult(step=0, out=out))
    if tc.ema_decay > 0:
        state.average = WeightAverage(model, tc.ema_decay)
    if saved is not None:
        restore(state, saved, checkpoint)
    # resumed: drop rows past the checkpoint; --resume starting afresh: drop the dead attempt's rows
    state.metrics = MetricsLog(out, info, tc.tensorboard, resumed_step=state.step if resume else None)
    state.result.step, state.result.best_valid_loss = state.step, state.best
    if tc.input_noise > 0:
        state.unigram = unigram_distribution(data.train, mc.n_token, device)
    state.start_time = state.last_log = time.perf_counter()
    return state


def restore(state: TrainState, saved: dict[str, Any], checkpoint: Path) -> None:
    """Optimiser, grad scaler, stream position, step, memory and RNG exactly as last/ saved them; and the
    training weights under a weight average (the model was loaded with the checkpoint's, the average)."""
    restore_weights(state, saved, checkpoint)
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
    except ValueError as exc:  # another number or size of parameter groups
        raise TransformerXLError(f"cannot resume from {checkpoint}: its optimiser state does not fit this "
                                 f"version's parameter groups ({exc}); train into a new --out") from None
    if state.scaler is not None and saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.streams.load_state_dict(saved["streams"])
    state.step, state.best = int(saved["step"]), saved.get("best_valid_loss")
    state.seconds_before = state.clock = float(saved.get("train_seconds", 0.0))
    state.last_saved = state.evaluated_at = state.step
    if saved.get("mems") is not None:
        restore_memory(state, saved["mems"])
    set_rng_state(saved["rng"][state.info.rank], state.device)


def restore_weights(state: TrainState, saved: dict[str, Any], checkpoint: Path) -> None:
    """A checkpoint saved with a weight average holds the average as its model and the weights the optimiser
    steps as ``training_weights``: training goes on from those (with or without an average now), and the
    average from the model's. A checkpoint without an average starts one, if asked for, from here."""
    trained = saved.get("training_weights")
    if trained is None:
        return
    named = dict(state.model.named_parameters())
    if set(trained) != set(named):
        raise TransformerXLError(f"cannot resume from {checkpoint}: its training weights name other parameters "
                                 "than this model's; train into a new --out")
    average = {name: p.detach().clone() for name, p in named.items()}
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(trained[name])
    if state.average is not None and saved.get("weight_average") is not None:
        state.average.load_state_dict(saved["weight_average"], average)


def restore_memory(state: TrainState, layers: list[Tensor]) -> None:
    """Give each chunk's runner its rows of the saved memory: per layer (B, M, C) of the global batch."""
    local_batch = state.config.train.batch_size // state.info.world_size
    first = state.info.rank * local_batch
    local = Memory(tuple(layer[first:first + local_batch].to(state.device) for layer in layers))
    chunk = local_batch // len(state.runners)
    for i, runner in enumerate(state.runners):
        runner.memory = local.rows(slice(i * chunk, (i + 1) * chunk))


def gather_memory(state: TrainState) -> list[Tensor] | None:
    """The memory of every chunk of every rank as one global batch, per layer (B, M, C) on the CPU."""
    memories = [runner.memory for runner in state.runners]
    if any(memory is None for memory in memories):
        return None
    local = Memory.cat(memories)  # (B_local, M, C) per layer
    return [torch.cat(D.all_gather_tensor(layer, state.info), dim=0).cpu() for layer in local.states]


# --- one optimiser step ------------------------------------------------------------------------------
def forward_backward(state: TrainState) -> StepOutcome:
    """The next segment of every stream, forward and backward through each chunk's runner (gradients
    synchronised on the last chunk only), then unscale (fp16), clip and set this step's learning rate."""
    oc, tc = state.config.optim, state.config.train
    segment, new_epoch = state.reader.next()
    if new_epoch:  # the streams restarted: the memory belongs to text that no longer precedes them
        for runner in state.runners:
            runner.reset()
    previous = [runner.memory for runner in state.runners]
    state.model.train()
    n = len(state.runners)
    inputs = segment.x if state.unigram is None else noise_inputs(segment.x, tc.input_noise, state.unigram)
    xs, ys = inputs.split(inputs.shape[0] // n), segment.y.split(segment.y.shape[0] // n)
    loss = torch.zeros((), device=state.device)
    for i, (runner, x, y) in enumerate(zip(state.runners, xs, ys)):
        sync = i == n - 1 or not state.info.enabled
        with nullcontext() if sync else state.ddp.no_sync():
            chunk_loss = runner.step(x, targets=y).loss.float().mean()
            scaled = chunk_loss / n
            (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
        loss += chunk_loss.detach() / n
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    grad_norm = nn.utils.clip_grad_norm_(state.params, oc.clip) if oc.clip > 0 else None
    # the time clock reads the seconds every rank agreed on at the previous step: the same rate everywhere
    lr = learning_rate(state.step, oc, max_steps=tc.max_steps, seconds=state.clock, max_time=tc.max_time)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    return StepOutcome(loss=loss, grad_norm=grad_norm, lr=lr, tokens=tc.batch_size * segment.y.shape[1],
                       previous_memory=previous)


def nonfinite(loss: Tensor, grad_norm: Tensor | None, params: list[nn.Parameter], *, grads: bool) -> Tensor:
    """1.0 when the step's loss (or, with ``grads``, any gradient) is NaN or inf, else 0.0, on the device
    (no host sync here: the caller reduces it with the other flags)."""
    bad = ~torch.isfinite(loss)
    if grads:
        if grad_norm is None:  # no clipping: a sum of norms is finite exactly when every gradient is
            norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            grad_norm = torch.stack(norms).sum() if norms else torch.zeros((), device=loss.device)
        bad = bad | ~torch.isfinite(grad_norm)
    return bad.double().reshape(1)


def agree(state: TrainState, outcome: StepOutcome, signals: StopSignals) -> None:
    """Set the outcome's stop, signalled and bad flags as any rank raised them (one collective), so that
    every rank takes the same branch. Without DDP and with nan_policy=ignore there is nothing to sync."""
    tc = state.config.train
    timed = state.config.optim.decay_clock == "time"
    seconds = state.run_seconds()
    stop = tc.max_time > 0 and state.budget_seconds() >= tc.max_time
    signalled, bad = signals.received is not None, False
    checked = tc.nan_policy != "ignore"
    if state.info.enabled or checked:
        flags = torch.tensor([float(stop), float(signalled)], dtype=torch.float64, device=state.device)
        if checked:  # fp16: the grad scaler already skips overflowing gradients, so check the loss only
            flags = torch.cat([flags, nonfinite(outcome.loss, outcome.grad_norm, state.params,
                                                grads=state.scaler is None)])
        if timed and state.info.enabled:  # the ranks' clocks differ a little: agree on the slowest
            seconds = float(D.all_reduce_max(torch.tensor([seconds], dtype=torch.float64, device=state.device),
                                             state.info)[0])
        stop, signalled, *rest = D.any_rank(flags, state.info)
        bad = bool(rest and rest[0])
    state.clock = seconds
    outcome.stop, outcome.signalled, outcome.bad = stop, signalled, bad


def apply_or_skip(state: TrainState, outcome: StepOutcome) -> None:
    """The optimiser step; or, for a non-finite step, drop the gradients and give every runner back the
    memory the step started from. Either way the step counts."""
    optimizer, scaler = state.optimizer, state.scaler
    if outcome.bad:
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()  # closes this step's unscale_
        for runner, memory in zip(state.runners, outcome.previous_memory):
            runner.memory = memory
        state.bad_run += 1
        state.result.skipped_steps += 1
    else:
        state.bad_run = 0
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if state.average is not None:
            state.average.update()
    state.step += 1
    state.pending.append(outcome.loss)
    state.tokens_since_log += outcome.tokens


# --- the start banner and the step clock ---------------------------------------------------------------
def banner(state: TrainState) -> str:
    """What this run is and where it runs: parameters, tokens per step, device, threads, precision."""
    mc, tc = state.config.model, state.config.train
    params = sum(p.numel() for p in state.model.parameters())
    device = str(state.device) + (f" x {state.info.world_size} processes" if state.info.enabled else "")
    threads = f", {torch.get_num_threads()} threads" if state.device.type == "cpu" else ""
    return (f"model: {params / 1e6:.2f}M parameters ({mc.n_layer} layers, d_model {mc.d_model}, seg_len {mc.seg_len}, "
            f"mem_len {mc.mem_len}); {tc.batch_size * mc.seg_len:,} tokens per step (batch {tc.batch_size} x "
            f"{mc.seg_len}); device {device}{threads}, precision {tc.precision}"
            + (f", weight average (decay {tc.ema_decay})" if state.average is not None else "")
            + f"; steps {state.step} -> {tc.max_steps}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _median(values: Any) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class StepClock:
    """Times the optimiser steps of a run (validation and saves excluded).

    After the first few steps it says how long a step takes and how long the rest of the run will; later it
    warns once when steps have become ``SLOWER`` times slower than the fastest stretch of ``WINDOW`` steps
    seen so far (or than ``expected`` seconds, a calibration made before training): on a CPU that almost
    always means another process is sharing the cores, and fewer threads help.
    """

    WARMUP = 1  # the first step of a process allocates and warms caches
    ESTIMATE_AFTER = 3  # steps timed before the estimate
    WINDOW = 5
    SLOWER = 3.0

    def __init__(self, state: TrainState, *, expected: float | None = None) -> None:
        self.state = state
        self.expected = expected
        self.seen = 0
        self.recent: list[float] = []
        self.fastest: float | None = expected
        self.estimated = False
        self.warned = False
        self.step_seconds: float | None = None  # the estimate, once made

    def record(self, seconds: float) -> None:
        self.seen += 1
        if self.seen <= self.WARMUP:
            return
        self.recent = (self.recent + [seconds])[-self.WINDOW:]
        if not self.estimated and len(self.recent) >= self.ESTIMATE_AFTER:
            self.estimated = True
            self.step_seconds = _median(self.recent)
            self._estimate()
        if len(self.recent) == self.WINDOW:
            median = _median(self.recent)
            if self.fastest is not None and not self.warned and median > self.SLOWER * self.fastest:
                self.warned = True
                self._warn(median)
            self.fastest = median if self.fastest is None else min(self.fastest, median)

    def _load_note(self) -> str:
        from ..runtime import available_cpus

        if self.state.device.type != "cpu" or not hasattr(os, "getloadavg"):
            return ""
        load, cpus = os.getloadavg()[0], available_cpus()
        if load <= cpus + 0.5:
            return ""
        note = f"; the load average is {load:.1f} on {cpus} CPUs: other processes share these cores"
        threads = torch.get_num_threads()
        return note + (f", and fewer threads may be much faster (--threads 1; now {threads})" if threads > 1 else "")

    def _estimate(self) -> None:
        state, per_step = self.state, self.step_seconds or 0.0
        tc = state.config.train
        left = tc.max_steps - state.step
        if tc.max_time > 0:  # the time budget may end the run first
            seconds_left = tc.max_time - state.budget_seconds()
            if per_step * left > seconds_left:
                left = max(0, int(seconds_left / per_step)) if per_step > 0 else left
                say(state.info, f"{per_step:.3g} s per step: train.max_time ends the run in about "
                    f"{_duration(max(0.0, seconds_left))}, after about {left} more steps" + self._load_note())
                return
        say(state.info, f"{per_step:.3g} s per step: about {_duration(per_step * left)} for the {left} steps left"
            + self._load_note())

    def _warn(self, median: float) -> None:
        state = self.state
        threads = torch.get_num_threads()
        cause = ("another process may be using the device, or it is throttling" if state.device.type != "cpu"
                 else "another process is probably sharing these CPU cores; "
                 + (f"try fewer threads (--threads 1; now {threads}) or stop the other job" if threads > 1
                    else "stop the other job, or expect the run to take longer"))
        say(state.info, f"warning: training steps now take {median:.3g} s, {median / (self.fastest or 1):.1f}x the "
                        f"{self.fastest:.3g} s they took before: {cause}")


# --- logging, the non-finite policy ------------------------------------------------------------------
def flush_losses(state: TrainState) -> list[float]:
    """The losses of the steps since the last flush, averaged over the ranks, added to the result."""
    if not state.pending:
        return []
    local = torch.stack(state.pending).double()
    if state.info.enabled:
        torch.distributed.all_reduce(local)
        local /= state.info.world_size
    state.pending.clear()
    values = local.tolist()
    state.result.losses.extend(values)
    return values


def log_step(state: TrainState, outcome: StepOutcome) -> dict[str, Any] | None:
    """Write a metrics row every train.log_every steps, at the last step and on any event; the row, or None."""
    tc = state.config.train
    if not ((tc.log_every and state.step % tc.log_every == 0) or state.step == tc.max_steps
            or outcome.stop or outcome.signalled or outcome.bad):
        return None
    finite = [v for v in flush_losses(state) if math.isfinite(v)]
    now = time.perf_counter()
    record: dict[str, Any] = {"loss": sum(finite) / len(finite) if finite else None, "lr": outcome.lr,
                              "tokens_per_s": state.tokens_since_log / max(now - state.last_log, 1e-9)}
    if outcome.grad_norm is not None and math.isfinite(float(outcome.grad_norm)):
        record["grad_norm"] = float(outcome.grad_norm)
    if state.result.skipped_steps:
        record["skipped_steps"] = state.result.skipped_steps
    state.metrics.log(state.step, record)
    state.last_log, state.tokens_since_log = now, 0
    if state.log_lines:
        loss = f"loss {record['loss']:.4f}" if record["loss"] is not None else "loss n/a"
        say(state.info, f"step {state.step}/{tc.max_steps} {loss} lr {outcome.lr:.3g} "
                        f"{record['tokens_per_s']:,.0f} tokens/s")
    return record


def check_bad_steps(state: TrainState, outcome: StepOutcome) -> None:
    """Report a skipped step; raise NonFiniteLossError under nan_policy=stop or after max_bad_steps in a row."""
    if not outcome.bad:
        return
    tc = state.config.train
    say(state.info, f"step {state.step}: non-finite loss or gradient, step skipped "
                         f"({state.bad_run} in a row, {state.result.skipped_steps} in all)")
    if tc.nan_policy == "stop" or state.bad_run >= tc.max_bad_steps:
        where = (f"the last good checkpoint is {state.out / 'last'} (step {state.last_saved}); resume from it "
                 "with --resume" if state.last_saved is not None else "no checkpoint was saved yet")
        raise NonFiniteLossError(
            f"{state.bad_run} consecutive step(s) had a non-finite loss or gradient (last at step {state.step}, "
            f"train.nan_policy={tc.nan_policy}, train.max_bad_steps={tc.max_bad_steps}); {where}, after "
            "lowering optim.lr or setting optim.clip")


# --- checkpoints and validation ----------------------------------------------------------------------
def save(state: TrainState, name: str) -> None:
    """Checkpoint ``out/name`` (last or best) with everything an exact resume needs. Every rank calls it."""
    if state.out is None:
        return
    training_state = {
        "step": state.step, "world_size": state.info.world_size, "best_valid_loss": state.best,
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "streams": state.streams.state_dict(), "mems": gather_memory(state),
        "rng": D.all_gather_object(rng_state(state.device), state.info),
        "data": data_fingerprint(state.data.train),  # a resume on other data is refused (check_same_data)
        "train_seconds": state.clock,  # the time clock of optim.decay_clock "time" (and max_time) goes on
    }
    target = state.out / name
    if target.is_symlink():  # a checkpoint directory linked elsewhere (another disk): save there, keep the link
        target = target.resolve()
    if state.info.is_main:
        with averaged(state) as trained:
            if state.average is not None:  # the model saved is the average; resume needs the weights it trains
                training_state["training_weights"] = {name: w.cpu() for name, w in trained.items()}
                training_state["weight_average"] = state.average.state_dict()
            save_checkpoint(target, model=state.model, run_config=state.config, training_state=training_state,
                            vocab=state.data.vocab)
    D.barrier(state.info)
    if name == "last":
        state.last_saved = state.step


def averaged(state: TrainState) -> Any:
    """A block in which the model holds the weights that validation and checkpoints use."""
    return state.average.applied() if state.average is not None else nullcontext()


def validate(state: TrainState) -> float | None:
    """Loss on the validation split (train.eval_max_tokens of it) at the training span; best/ when it is
    the best so far. None without a validation split."""
    state.evaluated_at = state.step
    valid, tc = state.data.valid, state.config.train
    if valid is None or len(valid) < 2:
        return None
    with averaged(state):
        res = evaluate(state.model, valid, batch_size=tc.eval_batch_size, max_tokens=tc.eval_max_tokens,
                       level=state.data.level, device=state.device, precision=tc.precision, dist_info=state.info)
    record = {"valid_loss": res.loss, "valid_ppl": res.ppl, "valid_bits_per_token": res.bits_per_token}
    if res.bpc is not None:
        record["valid_bpc"] = res.bpc
    state.metrics.log(state.step, record)
    say(state.info, f"step {state.step}: valid loss {res.loss:.4f}, ppl {res.ppl:.3f}"
             + (f", bpc {res.bpc:.4f}" if res.bpc is not None else ""))
    state.result.valid_loss = res.loss
    if state.best is None or res.loss < state.best:
        state.best = state.result.best_valid_loss = res.loss
        save(state, "best")
    return res.loss


def on_cadence(state: TrainState) -> None:
    """Validate every train.eval_every steps and save last/ every train.save_every steps."""
    tc = state.config.train
    if tc.eval_every and state.step % tc.eval_every == 0:
        validate(state)
    if tc.save_every and state.step % tc.save_every == 0:
        save(state, "last")


def interrupt(state: TrainState, signals: StopSignals) -> None:
    """A signal came (preemption, Ctrl-C): save last/ now, without the periodic validation."""
    if state.last_saved != state.step:
        save(state, "last")
    state.result.stopped_early = state.step < state.config.train.max_steps
    state.result.interrupted = signals.name or "signal"  # another rank got it when this one has none
    where = state.out / "last" if state.out is not None else "nothing (no --out)"
    say(state.info, f"{state.result.interrupted} received: saved {where} at step {state.step}; "
                         "continue with --resume")


def finish(state: TrainState) -> None:
    """End of the run: the losses still pending; unless a signal stopped it, validate the final weights and
    save last/ if that has not happened at this step."""
    flush_losses(state)
    if state.result.interrupted is None:
        if state.evaluated_at != state.step:
            validate(state)
        if state.last_saved != state.step:
            save(state, "last")
    state.result.step, state.result.best_valid_loss = state.step, state.best


# --- the run ----------------------------------------------------------------------------------------
def train(config: RunConfig, *, data: Any, out: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, allow_new_data: bool = False, vocab: Any = None, progress: bool | None = None,
          on_step: Callable[[int, float], None] | None = None,
          expected_step_seconds: float | None = None) -> TrainResult:
    """Train ``config.model`` on ``data`` (see :func:`load_data`), writing checkpoints and metrics to ``out``.

    ``out`` has one owner: rank 0 holds its lock (``out/.lock``) for the whole run, and another process
    gets an error naming this one. A fresh run refuses an ``out`` holding an earlier run's checkpoints or
    metrics unless ``overwrite=True`` (which deletes them). ``resume=True`` continues exactly from
    ``out/last``: the losses of N steps equal those of N/2 steps, a stop, and N/2 resumed steps; without a
    last/ yet it starts the run, so one command serves every restart. Run under torchrun for DDP (one
    process per device). ``progress``: None shows a bar on a terminal only. ``on_step(step, loss)`` is
    called after every step.
    """
    from ..locks import DirectoryLock

    device = resolve_device(config.train.device)
    info = D.init_distributed(device, timeout_s=config.train.dist_timeout)
    out_path = Path(out) if out is not None else None
    lock = DirectoryLock(out_path, what="run directory") if out_path is not None and info.is_main else None
    try:
        refused: TransformerXLError | None = None
        if lock is not None:
            try:
                lock.acquire()
            except TransformerXLError as exc:
                refused = exc
        # every rank learns whether rank 0 got the directory, so none waits for it in a collective
        if D.any_rank(torch.tensor([float(refused is not None)], dtype=torch.float64, device=device), info)[0]:
            raise refused or TransformerXLError(f"{out_path}: rank 0 could not lock the run directory (see its error)")
        state = setup(config, load_data(data, vocab), out=out_path, resume=resume, overwrite=overwrite,
                      device=device, info=info, allow_new_data=allow_new_data)
        return run(state, progress=progress, on_step=on_step, expected_step_seconds=expected_step_seconds)
    finally:
        if lock is not None:
            lock.release()
        D.shutdown(info)


def run(state: TrainState, *, progress: bool | None = None, on_step: Callable[[int, float], None] | None = None,
        expected_step_seconds: float | None = None) -> TrainResult:
    """Steps until train.max_steps, train.max_time or a signal; then the final validation and save.
    Without a progress bar (``progress=False``, or stderr not a terminal) each metrics row is also a plain,
    timestamped line. ``expected_step_seconds``: a calibration; steps several times slower get a warning."""
    from tqdm.auto import tqdm

    tc = state.config.train
    disable = (not state.info.is_main) or (None if progress is None else not progress)
    # a time-decayed run ends when train.max_time is spent, not at max_steps: its bar counts seconds
    by_time = state.config.optim.decay_clock == "time"  # (the config requires max_time > 0 then)
    if by_time:
        bar = tqdm(total=tc.max_time, initial=min(state.budget_seconds(), tc.max_time),
                   desc="train", dynamic_ncols=True, disable=disable,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
    else:
        bar = tqdm(total=tc.max_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=disable)
    state.log_lines = bool(bar.disable) and state.info.is_main
    say(state.info, banner(state))
    clock = StepClock(state, expected=expected_step_seconds)
    try:
        with StopSignals() as signals:
            while state.step < tc.max_steps:
                started = time.perf_counter()
                outcome = forward_backward(state)
                agree(state, outcome, signals)
                apply_or_skip(state, outcome)
                clock.record(time.perf_counter() - started)
                record = log_step(state, outcome)
                bar.update(min(state.budget_seconds(), tc.max_time) - bar.n if by_time else 1)
                if record is not None and record["loss"] is not None:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{outcome.lr:.2e}",
                                    tok_s=f"{record['tokens_per_s']:.0f}", **({"step": state.step} if by_time else {}))
                check_bad_steps(state, outcome)
                if on_step is not None:
                    on_step(state.step, float(outcome.loss))
                if outcome.signalled:
                    interrupt(state, signals)
                    break
                on_cadence(state)
                if outcome.stop:
                    state.result.stopped_early = state.step < tc.max_steps
                    break
            finish(state)
    finally:
        bar.close()
        state.metrics.close()
    return state.result
