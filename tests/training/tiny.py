"""A run config and data small enough for CPU tests (well under a second per step)."""

from __future__ import annotations

import numpy as np

from transformer_xl.config import ModelConfig, OptimConfig, RunConfig, TrainConfig


def tiny_run_config(*, dropout: float = 0.1, **train_overrides) -> RunConfig:
    model = ModelConfig(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=dropout,
                        seg_len=8, mem_len=8)
    train = dict(batch_size=4, grad_accum=2, max_steps=6, eval_every=2, save_every=2, log_every=1,
                 eval_batch_size=2, tensorboard=False)
    train.update(train_overrides)
    return RunConfig(model=model, optim=OptimConfig(lr=3e-3, warmup_steps=1, decay_steps=6), train=TrainConfig(**train))


def tiny_data(n_train: int = 130, n_valid: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    # 130 tokens in 4 streams of 32: an epoch is 4 segments of 8, so 6 steps cross an epoch boundary
    rng = np.random.default_rng(seed)
    return {"train": rng.integers(0, 50, n_train), "valid": rng.integers(0, 50, n_valid)}


def ddp_worker(rank: int, world_size: int, port: int, out: str, config_dict: dict, data: dict) -> None:
    """One torchrun-like process: the variables torchrun would set, then the ordinary train()."""
    import os

    from transformer_xl.training import train

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = train(RunConfig.from_dict(config_dict), data=data, out=out)
    if rank == 0:
        import json
        from pathlib import Path

        Path(out, "losses.json").write_text(json.dumps(result.losses))
