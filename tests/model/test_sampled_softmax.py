"""Sampled softmax (model.sample_softmax): the log-uniform sampler, the corrected sampled loss, eval/no-grad
falling back to the full softmax, tied weights, config errors, and a tiny lm1b-shaped run that learns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from transformer_xl.config import ConfigError, ModelConfig
from transformer_xl.model import TransformerXLLM
from transformer_xl.model.sampled_softmax import LogUniformSampler, sampled_softmax_nll


# --- (a) the sampler ---------------------------------------------------------------------------------------
def test_probabilities_are_the_log_uniform_formula_and_sum_to_one() -> None:
    for n_token in (1, 50, 793_471):
        probs = LogUniformSampler(n_token).probs()
        assert probs.shape == (n_token,) and probs.dtype == torch.float64
        assert abs(float(probs.sum()) - 1.0) < 1e-9
        for k in sorted({0, min(1, n_token - 1), n_token // 2, n_token - 1}):
            expected = (math.log(k + 2) - math.log(k + 1)) / math.log(n_token + 1)
            assert float(probs[k]) == pytest.approx(expected, rel=1e-12)
        assert bool((probs[1:] < probs[:-1]).all())  # frequent (small) ids first


def test_draws_follow_the_probabilities_and_inclusion_matches_the_expected_count() -> None:
    n_token, n_tries = 50, 5
    sampler = LogUniformSampler(n_token)
    probs = sampler.probs()
    gen = torch.Generator().manual_seed(1)
    # raw draws: Pearson's chi-square over 50 bins (49 degrees of freedom; 100 is p ~ 2e-5)
    n_draws = 200_000
    draws = torch.multinomial(probs, n_draws, replacement=True, generator=gen)
    counts = torch.bincount(draws, minlength=n_token).double()
    chi2 = float(((counts - n_draws * probs) ** 2 / (n_draws * probs)).sum())
    assert chi2 < 100, chi2
    # the distinct sample: id k is present with probability pi(k) = 1 - (1 - q(k))^n_tries, the count the
    # loss corrects by; binomial z-scores over many seeded samples
    n_samples = 4000
    present = torch.zeros(n_token, dtype=torch.float64)
    for _ in range(n_samples):
        ids, log_pi = sampler.sample(n_tries, generator=gen)
        assert ids.numel() <= n_tries and bool((ids[1:] > ids[:-1]).all())  # distinct, sorted
        torch.testing.assert_close(log_pi, torch.log(1 - (1 - probs[ids]) ** n_tries))
        present[ids] += 1
    pi = 1 - (1 - probs) ** n_tries
    z = (present - n_samples * pi) / torch.sqrt(n_samples * pi * (1 - pi))
    assert float(z.abs().max()) < 4.5, z
    # a uniform sampler would put 4000 * (1 - 0.98^5) ~ 384 samples on id 0; log-uniform puts ~ 893
    assert present[0] > 800 and present[-1] < 150


# --- (b) the sampled loss --------------------------------------------------------------------------------------
def _expected_sampled_grad(logits: torch.Tensor, targets: torch.Tensor, n_tries: int, n_samples: int,
                           seed: int = 0) -> torch.Tensor:
    """E[d sampled loss / d logits] over seeded samples: the output layer is the identity, so the hidden
    states are the logits."""
    n_token = logits.shape[1]
    sampler, gen = LogUniformSampler(n_token), torch.Generator().manual_seed(seed)
    eye = torch.eye(n_token, dtype=logits.dtype)
    total = torch.zeros_like(logits)
    for _ in range(n_samples):
        leaf = logits.clone().requires_grad_(True)
        sampled_softmax_nll(leaf, targets, eye, None, sampler, n_tries, generator=gen).sum().backward()
        total += leaf.grad
    return total / n_samples


def test_expected_gradient_points_the_way_of_the_full_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    # The property, per position, averaged over seeded samples: the gradient of the sampled loss w.r.t. the
    # logits of the wrong classes (how hard each wrong class is pushed down) has cosine > 0.9 with the
    # full softmax's (its probabilities), and the whole gradient (one-hot target included) > 0.97.
    # 10 tries over 50 classes: a sample holds ~7 distinct negatives, id 0 ~ 35 times more often than id 49.
    # Moderate logits (std 1): the sampled softmax is biased, most for peaked logits and few samples.
    torch.manual_seed(0)
    n_token, n_pos = 50, 6
    logits = torch.randn(n_pos, n_token, dtype=torch.float64)
    targets = torch.randint(0, n_token, (n_pos,))
    full = torch.softmax(logits, dim=1)
    onehot = F.one_hot(targets, n_token).double()

    def cosines() -> tuple[torch.Tensor, torch.Tensor]:
        grad = _expected_sampled_grad(logits, targets, n_tries=10, n_samples=1500)
        wrong = F.cosine_similarity(grad * (1 - onehot), full * (1 - onehot), dim=1)
        return wrong, F.cosine_similarity(grad, full - onehot, dim=1)

    wrong, whole = cosines()
    assert float(wrong.min()) > 0.9, wrong
    assert float(whole.min()) > 0.97, whole
    # the check can fail: without the log-expected-count correction the frequent ids are over-weighted
    monkeypatch.setattr(LogUniformSampler, "log_expected_count",
                        lambda self, ids, n_tries: torch.zeros(ids.shape, dtype=torch.float64))
    wrong, _ = cosines()
    assert float(wrong.min()) < 0.85, wrong


def test_expected_gradient_direction_through_a_real_output_layer() -> None:
    # hidden (N, d) and weight (V, d) with a bias: the averaged gradient over all three, flattened, has
    # cosine > 0.9 with the full softmax's
    torch.manual_seed(1)
    n_token, d, n_pos = 50, 16, 8
    hidden = torch.randn(n_pos, d, dtype=torch.float64)
    weight = 0.5 * torch.randn(n_token, d, dtype=torch.float64)
    bias = 0.5 * torch.randn(n_token, dtype=torch.float64)
    targets = torch.randint(0, n_token, (n_pos,))

    def grads(loss_fn) -> torch.Tensor:
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        loss_fn(*leaves).sum().backward()
        return torch.cat([t.grad.flatten() for t in leaves])

    full = grads(lambda h, w, b: F.cross_entropy(h @ w.t() + b, targets, reduction="none"))
    sampler, gen = LogUniformSampler(n_token), torch.Generator().manual_seed(0)
    mean = sum(grads(lambda h, w, b: sampled_softmax_nll(h, targets, w, b, sampler, 10, generator=gen))
               for _ in range(2000)) / 2000
    assert float(F.cosine_similarity(mean, full, dim=0)) > 0.9


def test_with_every_class_sampled_the_loss_is_the_full_softmax() -> None:
    torch.manual_seed(2)
    n_token = 50
    logits = 3.0 * torch.randn(7, n_token, dtype=torch.float64)
    targets = torch.randint(0, n_token, (7,))
    full = F.cross_entropy(logits, targets, reduction="none")
    eye = torch.eye(n_token, dtype=torch.float64)
    # 5000 tries: every class is present (pi = 1 up to e^-25), the true one masked among the negatives
    loss = sampled_softmax_nll(logits, targets, eye, None, LogUniformSampler(n_token), 5000)
    torch.testing.assert_close(loss, full, atol=1e-9, rtol=1e-9)
    # and with few tries the sampled loss is a different (smaller-normaliser) quantity
    few = sampled_softmax_nll(logits, targets, eye, None, LogUniformSampler(n_token), 3)
    assert float((few - full).abs().max()) > 1e-3


# --- (c) evaluation and no-grad use the full softmax; (d) tied weights ------------------------------------------
def _model(**overrides) -> TransformerXLLM:
    config = ModelConfig(n_token=60, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                         seg_len=6, mem_len=6, **overrides)
    return TransformerXLLM(config)


def test_eval_and_no_grad_use_exactly_the_full_softmax() -> None:
    torch.manual_seed(3)
    sampled = _model(sample_softmax=8)
    full = _model()
    full.load_state_dict(sampled.state_dict())  # nothing extra in the state dict
    assert sampled.state_dict().keys() == full.state_dict().keys()
    x, y = torch.randint(0, 60, (2, 6)), torch.randint(0, 60, (2, 6))
    reference = full(x, targets=y).loss
    sampled.eval()
    assert torch.equal(sampled(x, targets=y).loss, reference)
    sampled.train()
    with torch.no_grad():
        assert torch.equal(sampled(x, targets=y).loss, reference)
    out = sampled(x, targets=y)  # training with gradients: the sampled surrogate, same shape
    assert out.loss.shape == reference.shape and out.loss.requires_grad
    assert not torch.allclose(out.loss, reference)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("d_embed", [16, 12])
def test_the_gradient_reaches_the_output_weights_the_full_softmax_uses(tied: bool, d_embed: int) -> None:
    torch.manual_seed(4)
    model = _model(sample_softmax=20, tie_weight=tied, d_embed=d_embed, tie_projs=(tied,))
    out_weight = model.crit.out_layers[0].weight
    emb_weight = model.word_emb.emb_layers[0].weight
    assert (out_weight is emb_weight) == tied
    # inputs use ids 0..29 only, targets 30..59 only: rows 30.. of the embedding get a gradient only
    # through the output layer (the true-class logits)
    x, y = torch.randint(0, 30, (2, 6)), torch.randint(30, 60, (2, 6))
    model.train()
    model(x, targets=y).loss.mean().backward()
    assert out_weight.grad is not None and float(out_weight.grad[y.unique()].abs().min()) > 0
    assert model.crit.out_layers[0].bias.grad is not None
    if tied:
        assert float(emb_weight.grad[30:].abs().sum()) > 0
    else:
        assert emb_weight.grad is None or float(emb_weight.grad[30:].abs().sum()) == 0
    if d_embed != 16:  # the output projection is used (and shared with the embedding's when tied)
        proj = model.crit.out_projs[0]
        assert proj.grad is not None and (proj is model.word_emb.emb_projs[0]) == tied


@pytest.mark.slow
def test_resume_with_the_sampled_softmax_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # the negatives come from the torch RNG the training state saves: a resumed run draws the same ones
    import dataclasses

    from training.tiny import tiny_data, tiny_run_config
    from transformer_xl.training import train

    def config(max_steps: int):
        run = tiny_run_config(max_steps=max_steps)
        return dataclasses.replace(run, model=run.model.replace(sample_softmax=10))

    data = tiny_data()
    full = train(config(6), data=data, out=tmp_path / "full")
    first = train(config(3), data=data, out=tmp_path / "split")
    second = train(config(6), data=data, out=tmp_path / "split", resume=True)
    assert first.losses + second.losses == full.losses  # exact
    plain = train(tiny_run_config(max_steps=6), data=data, out=None)
    assert plain.losses[0] != full.losses[0]  # the training loss was the sampled one


# --- (f) config errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, match", [
    ({"sample_softmax": 50}, r"sample_softmax must be an integer in \[0, n_token=50\), got 50"),
    ({"sample_softmax": -1}, r"sample_softmax must be an integer in \[0, n_token=50\), got -1"),
    ({"sample_softmax": True}, "sample_softmax must be an integer"),
    ({"sample_softmax": 2.5}, "sample_softmax must be an integer"),
    ({"sample_softmax": 10, "cutoffs": (20,)}, r"sample_softmax needs a plain softmax, got cutoffs \[20\]"),
])
def test_config_errors_are_one_line(changes: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ModelConfig(n_token=50, **changes)
    assert "\n" not in str(info.value)
    assert ModelConfig(n_token=50, sample_softmax=49).sample_softmax == 49
    assert ModelConfig.from_dict(ModelConfig(n_token=50, sample_softmax=7).to_dict()).sample_softmax == 7


# --- (e) a tiny lm1b-shaped run learns through the CLI ------------------------------------------------------------
def _write_lm1b(root: Path, n_words: int = 120) -> Path:
    """The lm1b layout: shuffled training shards, heldout shard 00000, and 1b_word_vocab.txt (ids by frequency).
    Each sentence walks the word list from some start (word i is followed by word i + 1), so the next word is
    predictable and a model that learns beats the uniform ln(V) by far."""
    top = root / "1-billion-word-language-modeling-benchmark-r13output"
    words = [f"w{i}" for i in range(n_words)]
    gen = torch.Generator().manual_seed(5)

    def sentences(n: int) -> list[str]:
        starts = torch.randint(0, n_words, (n,), generator=gen).tolist()
        lengths = torch.randint(6, 14, (n,), generator=gen).tolist()
        return [" ".join(words[(s + j) % n_words] for j in range(k)) for s, k in zip(starts, lengths)]

    for folder, name, lines in (("training-monolingual.tokenized.shuffled", "news.en-00001-of-00100",
                                 sentences(1500)),
                                ("heldout-monolingual.tokenized.shuffled", "news.en.heldout-00000-of-00050",
                                 sentences(60))):
        (top / folder).mkdir(parents=True)
        (top / folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "1b_word_vocab.txt").write_text(
        "<S> 1000\n</S> 1000\n<UNK> 1\n" + "".join(f"{w} {100 - i % 100}\n" for i, w in enumerate(words)),
        encoding="utf-8")
    return root


@pytest.mark.slow
def test_tiny_lm1b_run_learns_with_the_sampled_softmax(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from transformer_xl.cli import main

    source = _write_lm1b(tmp_path / "src", n_words=40)
    data = tmp_path / "data"
    assert main(["prepare", "--corpus", "lm1b", "--path", str(source), "--out", str(data), "--no-progress"]) == 0
    model = ["--model.n_layer", "1", "--model.d_model", "32", "--model.n_head", "2", "--model.d_head", "16",
             "--model.d_inner", "64", "--model.seg_len", "12", "--model.mem_len", "12", "--model.dropout", "0.0"]
    run = ["--train.batch_size", "8", "--train.max_steps", "150", "--train.eval_every", "50",
           "--train.save_every", "0", "--train.log_every", "50", "--train.tensorboard", "false",
           "--train.eval_max_tokens", "400", "--optim.lr", "0.02", "--optim.warmup_steps", "5",
           "--no-progress", "--threads", "1"]
    # a sample_softmax as large as the vocabulary is refused on one line (exit status 2)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), *model,
                 "--model.sample_softmax", "100000", *run]) == 2
    err = capsys.readouterr().err.strip()
    assert "sample_softmax must be an integer in [0, n_token=" in err and len(err.splitlines()) == 1

    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *model,
                 "--model.sample_softmax", "12", *run]) == 0
    saved = json.loads((tmp_path / "run" / "last" / "config.json").read_text(encoding="utf-8"))
    assert saved["sample_softmax"] == 12 and saved["cutoffs"] == [] and saved["n_token"] == 43  # 40 + 3 specials
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r["valid_loss"] for r in rows if "valid_loss" in r]  # evaluation: the full softmax
    assert len(valid) == 3
    # the start: an untrained model (init std 0.02) scores ln(V) on any text
    untrained = TransformerXLLM(ModelConfig.from_dict(saved)).eval()
    x = torch.randint(0, saved["n_token"], (4, 13))
    with torch.no_grad():
        start = float(untrained(x[:, :-1], targets=x[:, 1:]).loss.mean())
    assert start == pytest.approx(math.log(saved["n_token"]), abs=0.05)
    # trained with 12 log-uniform tries per step, the full-softmax validation loss falls far below it (the
    # next word is nearly determined within a sentence; the first word of a sentence is not)
    assert valid[-1] < 0.6 * start, (valid, start)
