"""train(): the training loop of the paper, with memory carried across segments.

One optimiser step reads the next segment of every stream. The local batch is split into
``grad_accum`` chunks of whole streams; each chunk keeps its own memory (the original's batch_chunk),
and under DDP gradients are synchronised only on the last chunk (no_sync). The loss is the mean over
all tokens of the global batch, so one process on batch B and W processes on B / W streams each
compute the same gradient.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..config import RunConfig, TransformerXLError
from ..data.streams import OrderedStreams, Segment
from ..evaluation import evaluate
from ..model import TransformerXLLM
from . import distributed as D
from .checkpoint import (
    load_run_config,
    load_training_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .schedule import learning_rate

Memory = tuple[Tensor, ...]
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainData:
    """Token arrays of the splits and the vocabulary they were encoded with (None: bare arrays)."""

    train: np.ndarray
    valid: np.ndarray | None = None
    vocab: Any = None

    @property
    def level(self) -> str | None:
        return getattr(self.vocab, "kind", None)


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


class _StopSignals:
    """SIGTERM (preemption) and SIGINT (Ctrl-C) set a flag that the loop checks between steps; the loop
    then saves last/ and returns, so a resume is exact. A second signal of the same kind gets the previous
    handler (the user insists). Handlers can only be installed on the main thread; elsewhere this is a no-op."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)  # now the previous handler: KeyboardInterrupt, or the default exit
            return
        self.received = signum

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def _nonfinite(loss: Tensor, grad_norm: Tensor | None, params: list[nn.Parameter], *, grads: bool) -> Tensor:
    """1.0 when the step's loss (or, with ``grads``, any gradient) is NaN or inf, else 0.0, on the device
    (no host sync here: the caller reduces it with the other flags)."""
    bad = ~torch.isfinite(loss)
    if grads:
        if grad_norm is None:  # no clipping: a sum of norms is finite exactly when every gradient is
            norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            grad_norm = torch.stack(norms).sum() if norms else torch.zeros((), device=loss.device)
        bad = bad | ~torch.isfinite(grad_norm)
    return bad.double().reshape(1)


def load_data(data: Any, vocab: Any = None) -> TrainData:
    """A prepared data directory (txl prepare), a PreparedCorpus, a TrainData or {"train": ..., "valid": ...}."""
    if isinstance(data, TrainData):
        return data
    if isinstance(data, (str, Path)):
        from ..data.cache import load_prepared

        data = load_prepared(Path(data))
    if isinstance(data, Mapping):
        if "train" not in data:
            raise TransformerXLError("training data needs a 'train' split")
        return TrainData(train=np.asarray(data["train"]), valid=data.get("valid"), vocab=vocab)
    if hasattr(data, "split"):  # PreparedCorpus
        try:
            valid = data.split("valid")
        except TransformerXLError:
            valid = None
        return TrainData(train=data.split("train"), valid=valid, vocab=vocab if vocab is not None else data.vocab)
    raise TransformerXLError(f"cannot train on {type(data).__name__}; pass a prepared data directory")


def _check_compatible(saved: RunConfig, config: RunConfig) -> None:
    """Refuse a resume whose model or data layout differs from the checkpoint's."""
    saved_model, model = saved.model.to_dict(), config.model.to_dict()
    diffs = [f"model.{k} was {saved_model[k]!r}, now {model[k]!r}" for k in saved_model if saved_model[k] != model[k]]
    for key in ("batch_size",):
        a, b = getattr(saved.train, key), getattr(config.train, key)
        if a != b:
            diffs.append(f"train.{key} was {a!r}, now {b!r}")
    if diffs:
        raise TransformerXLError("cannot resume with an incompatible config: " + "; ".join(diffs)
                                 + " (drop those overrides, or train into a new --out)")


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps up to the checkpoint a run resumes from.

    After a crash the file holds rows for steps the resumed run will do again (and perhaps a torn last
    line); without this they would appear twice. Rewritten atomically.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


class _Metrics:
    """JSONL always (rank 0); TensorBoard when installed and asked for."""

    def __init__(self, out: Path | None, info: D.DistInfo, tensorboard: bool, *,
                 resumed_step: int | None = None) -> None:
        self.file = None
        self.writer = None
        if out is None or not info.is_main:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
            if resumed_step is not None:
                _truncate_metrics(out / METRICS_FILE, resumed_step)
            self.file = open(out / METRICS_FILE, "a", encoding="utf-8")
        except OSError as exc:  # unwritable, read-only or a file in the way: before any step is lost
            raise TransformerXLError(f"cannot write the run directory {out}: {exc.strerror or exc}; "
                                     "choose a writable --out") from None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
            except ImportError:
                self.writer = None
            else:
                self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps({"step": step, **values}) + "\n")
                self.file.flush()
            except OSError as exc:  # disk full: metrics are not worth the run; the next save reports it
                print(f"warning: cannot write {METRICS_FILE} ({exc.strerror or exc}); metrics logging stops",
                      file=sys.stderr, flush=True)
                self._close_file()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, step)

    def _close_file(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # the buffered tail cannot be written either
                pass

    def close(self) -> None:
        self._close_file()
        if self.writer is not None:
            self.writer.close()


class _Batches:
    """Segments of this rank's streams, epoch after epoch; knows when memory must restart."""

    def __init__(self, streams: OrderedStreams) -> None:
        self.streams = streams
        self._iter: Iterator[Segment] = iter(streams)

    def next(self) -> tuple[Segment, bool]:
        """(segment, new_epoch): at an epoch boundary the streams restart, so the memory must too."""
        try:
            return next(self._iter), False
        except StopIteration:
            self._iter = iter(self.streams)
            return next(self._iter), True


def train(config: RunConfig, *, data: Any, out: str | Path | None = None, resume: bool = False, vocab: Any = None,
          progress: bool | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``data`` (see :func:`load_data`), writing checkpoints and metrics to ``out``.

    ``resume=True`` continues exactly from ``out/last``: the losses of N steps equal those of N/2 steps,
    a stop, and N/2 resumed steps. Run under torchrun for DDP (one process per device). ``progress``:
    None shows a bar on a terminal only.
    """
    tc = config.train
    out = Path(out) if out is not None else None
    device = D.resolve_device(tc.device, local_rank=D._env_int("LOCAL_RANK", 0))
    info = D.init_distributed(device, timeout_s=tc.dist_timeout)
    try:
        return _train(config, data=load_data(data, vocab), out=out, resume=resume, device=device, info=info,
                      progress=progress, on_step=on_step)
    finally:
        D.shutdown(info)


def _train(config: RunConfig, *, data: TrainData, out: Path | None, resume: bool, device: torch.device,
           info: D.DistInfo, progress: bool | None, on_step: Callable[[int, float], None] | None) -> TrainResult:
    tc, oc, mc = config.train, config.optim, config.model
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

    # --- model, optimiser and the state to resume from -------------------------------------------------
    last = out / "last" if out is not None else None
    state: dict[str, Any] | None = None
    if resume:
        if last is None:
            raise TransformerXLError("resume needs the run directory (--out) holding last/")
        try:
            checkpoint = resolve_checkpoint(last)
        except TransformerXLError:
            raise TransformerXLError(f"nothing to resume: no checkpoint at {last}") from None
        saved = load_run_config(checkpoint)
        if saved is None:
            raise TransformerXLError(f"{checkpoint} has no run.json: it is not a training checkpoint")
        _check_compatible(saved, config)
        from ..pretrained import load_pretrained, load_vocabulary

        saved_vocab = load_vocabulary(checkpoint)
        if saved_vocab is not None and data.vocab is not None and saved_vocab != data.vocab:
            raise TransformerXLError(f"cannot resume: {checkpoint} was trained with another vocabulary than "
                                     "the data's (prepare the data with the same vocabulary)")
        state = load_training_state(checkpoint)
        if state["world_size"] != info.world_size:
            raise TransformerXLError(f"cannot resume on {info.world_size} process(es): the checkpoint was "
                                     f"written by {state['world_size']} (memory and streams are per process)")
        model = load_pretrained(checkpoint, map_location=device).train()
    else:
        if last is not None and (last.exists() or last.with_name(".last.old").exists()):
            raise TransformerXLError(f"{out} already holds a run; pass --resume to continue it or choose "
                                     "another --out")
        torch.manual_seed(tc.seed)  # same initial weights on every rank
        model = TransformerXLLM(mc).to(device)
        torch.manual_seed(tc.seed + info.rank)  # ranks draw different dropout masks
    raw_model = model
    params = [p for p in raw_model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if oc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=oc.eps, weight_decay=oc.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if tc.precision == "fp16" else None
    ddp = D.wrap_model(raw_model, info, device, find_unused=mc.n_clusters > 0)
    forward: nn.Module = torch.compile(ddp) if tc.compile else ddp

    streams = OrderedStreams(data.train, batch_size=tc.batch_size, seg_len=mc.seg_len, ext_len=mc.ext_len,
                             rank=info.rank, world_size=info.world_size, device=device)
    mems: list[Memory | None] = [None] * tc.grad_accum
    step, best = 0, None
    checked = tc.nan_policy != "ignore"
    bad_run = 0  # consecutive non-finite steps
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        streams.load_state_dict(state["streams"])
        step, best = int(state["step"]), state.get("best_valid_loss")
        if state.get("mems") is not None:
            # saved as the global batch (B, M, C) per layer, ranks in order: take this rank's streams
            first = info.rank * local_batch
            local = [m[first:first + local_batch].to(device) for m in state["mems"]]
            chunk = local_batch // tc.grad_accum
            mems = [tuple(m[i * chunk:(i + 1) * chunk] for m in local) for i in range(tc.grad_accum)]
        set_rng_state(state["rng"][info.rank], device)

    # --- loop -------------------------------------------------------------------------------------------
    metrics = _Metrics(out, info, tc.tensorboard, resumed_step=step if state is not None else None)
    result = TrainResult(step=step, best_valid_loss=best, out=out)
    batches = _Batches(streams)
    chunk_size = local_batch // tc.grad_accum
    from tqdm.auto import tqdm

    bar = tqdm(total=tc.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=(not info.is_main) or (None if progress is None else not progress))
    start_time = last_log = time.perf_counter()
    tokens_since_log = 0
    pending: list[Tensor] = []  # per-step local losses, reduced at the next log (no sync every step)

    def flush_losses() -> list[float]:
        if not pending:
            return []
        local = torch.stack(pending).double()
        if info.enabled:
            torch.distributed.all_reduce(local)
            local /= info.world_size
        pending.clear()
        values = local.tolist()
        result.losses.extend(values)
        return values

    def gather_mems() -> list[Tensor] | None:
        if any(m is None for m in mems):
            return None
        layers = [torch.cat([m[i] for m in mems], dim=0) for i in range(mc.n_layer)]  # (B_local, M, C)
        return [torch.cat(D.all_gather_tensor(layer, info), dim=0).cpu() for layer in layers]  # (B, M, C)

    def save(name: str) -> None:
        if out is None:
            return
        training_state = {
            "step": step, "world_size": info.world_size, "best_valid_loss": best,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "streams": streams.state_dict(), "mems": gather_mems(),
            "rng": D.all_gather_object(rng_state(device), info),
        }
        if info.is_main:
            save_checkpoint(out / name, model=raw_model, run_config=config, training_state=training_state,
                            vocab=data.vocab)
        D.barrier(info)

    def validate() -> float | None:
        nonlocal best
        if data.valid is None or len(data.valid) < 2:
            return None
        res = evaluate(raw_model, data.valid, batch_size=tc.eval_batch_size, max_tokens=tc.eval_max_tokens,
                       level=data.level, device=device, precision=tc.precision, dist_info=info)
        record = {"valid_loss": res.loss, "valid_ppl": res.ppl, "valid_bits_per_token": res.bits_per_token}
        if res.bpc is not None:
            record["valid_bpc"] = res.bpc
        metrics.log(step, record)
        D.print0(info, f"step {step}: valid loss {res.loss:.4f}, ppl {res.ppl:.3f}"
                 + (f", bpc {res.bpc:.4f}" if res.bpc is not None else ""))
        result.valid_loss = res.loss
        if best is None or res.loss < best:
            best = res.loss
            save("best")
        return res.loss

    saved_at = evaluated_at = step
    last_good = step if state is not None else None  # step held by last/ (None: nothing saved yet)

    def bad_steps_message() -> str:
        where = (f"the last good checkpoint is {out / 'last'} (step {last_good}); resume from it with --resume"
                 if out is not None and last_good is not None else "no checkpoint was saved yet")
        return (f"{bad_run} consecutive step(s) had a non-finite loss or gradient (last at step {step}, "
                f"train.nan_policy={tc.nan_policy}, train.max_bad_steps={tc.max_bad_steps}); {where}, after "
                "lowering optim.lr or setting optim.clip")

    signals = _StopSignals().__enter__()
    try:
        while step < tc.max_steps:
            segment, new_epoch = batches.next()
            if new_epoch:
                mems = [None] * tc.grad_accum
            previous_mems = list(mems)  # a skipped step keeps the memory it started from
            raw_model.train()
            xs, ys = segment.x.split(chunk_size), segment.y.split(chunk_size)
            step_loss = torch.zeros((), device=device)
            for i in range(tc.grad_accum):
                sync = i == tc.grad_accum - 1 or not info.enabled
                with nullcontext() if sync else ddp.no_sync():
                    with _autocast(device, tc.precision):
                        output = forward(xs[i], targets=ys[i], mems=mems[i])
                    loss = output.loss.float().mean()
                    scaled = loss / tc.grad_accum
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                mems[i] = output.mems
                step_loss += loss.detach() / tc.grad_accum
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_(params, oc.clip) if oc.clip > 0 else None
            lr = learning_rate(step, oc, max_steps=tc.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # stop by time, by signal, or skip a non-finite step: every rank must take the same branch
            stop = tc.max_time > 0 and time.perf_counter() - start_time >= tc.max_time
            signalled, bad = signals.received is not None, False
            if info.enabled or checked:  # else nothing to agree on, and no host sync
                flags = torch.tensor([float(stop), float(signalled)], dtype=torch.float64, device=device)
                if checked:  # fp16: the grad scaler already skips overflowing gradients, so check the loss only
                    flags = torch.cat([flags, _nonfinite(step_loss, grad_norm, params, grads=scaler is None)])
                stop, signalled, *rest = D.any_rank(flags, info)
                bad = bool(rest and rest[0])
            if bad:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.update()  # closes this step's unscale_
                mems = previous_mems
                bad_run += 1
                result.skipped_steps += 1
            else:
                bad_run = 0
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            pending.append(step_loss)
            tokens_since_log += tc.batch_size * segment.y.shape[1]
            bar.update(1)

            stop = stop or signalled
            if (tc.log_every and step % tc.log_every == 0) or step == tc.max_steps or stop or bad:
                values = flush_losses()
                finite = [v for v in values if math.isfinite(v)]
                now = time.perf_counter()
                record = {"loss": sum(finite) / len(finite) if finite else None, "lr": lr,
                          "tokens_per_s": tokens_since_log / max(now - last_log, 1e-9)}
                if grad_norm is not None and math.isfinite(float(grad_norm)):
                    record["grad_norm"] = float(grad_norm)
                if result.skipped_steps:
                    record["skipped_steps"] = result.skipped_steps
                metrics.log(step, record)
                if finite:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}",
                                    tok_s=f"{record['tokens_per_s']:.0f}")
                last_log, tokens_since_log = now, 0
            if bad:
                D.print0(info, f"step {step}: non-finite loss or gradient, step skipped "
                               f"({bad_run} in a row, {result.skipped_steps} in all)")
                if tc.nan_policy == "stop" or bad_run >= tc.max_bad_steps:
                    raise NonFiniteLossError(bad_steps_message())
            if on_step is not None:
                on_step(step, float(step_loss))
            if signalled:  # preemption: save and leave now, without the periodic evaluation
                if saved_at != step:
                    save("last")
                    saved_at = last_good = step
                result.stopped_early = step < tc.max_steps
                result.interrupted = signals.name or "signal"  # another rank got it when this one has none
                D.print0(info, f"{result.interrupted} received: saved {out / 'last' if out else 'nothing (no --out)'} "
                               f"at step {step}; continue with --resume")
                break
            if tc.eval_every and step % tc.eval_every == 0:
                validate()
                evaluated_at = step
            if tc.save_every and step % tc.save_every == 0:
                save("last")
                saved_at = last_good = step
            if stop:
                result.stopped_early = step < tc.max_steps
                break
        flush_losses()
        if result.interrupted is None:
            if evaluated_at != step:  # always finish with a validation of the final weights
                validate()
            if saved_at != step or (out is not None and not (out / "last").exists()):
                save("last")
    finally:
        signals.restore()
        bar.close()
        metrics.close()
    result.step, result.best_valid_loss = step, best
    return result
