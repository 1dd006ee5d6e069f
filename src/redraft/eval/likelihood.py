"""Validation likelihood: the diffusion NLL bound (Monte Carlo over t) and the AR twin's exact NLL.

Both score the same windows of the same validation tokens, so the numbers compare directly;
bits/byte (total bits over the UTF-8 bytes those tokens decode to) compares across tokenizers.
"""

from __future__ import annotations

import math

import torch

from redraft.config import Config
from redraft.data import eval_batches
from redraft.errors import RedraftError
from redraft.losses import draw_noise, token_losses, vocab_size_of

LN2 = math.log(2.0)


@torch.no_grad()
def evaluate(model, tokens, cfg: Config, mask_id: int, bos_id: int, max_batches: int | None,
             samples: int = 1, seed: int = 1234, dtype: torch.dtype | None = None,
             batch_size: int | None = None, estimator: str = "time",
             shard: tuple[int, int] = (0, 1)):
    """(mean nats/token, standard error, windows) over validation windows of `tokens`.

    For diffusion each window gets `samples` Monte Carlo draws of (t, xt) with t integrated
    over all of (0, 1] (no t_min), so the mean estimates the true ELBO; the standard error is
    over per-window means. estimator "count" draws the number of masks instead (the same bound,
    t integrated out analytically, lower variance). The noise is seeded, so repeated
    evaluations are comparable.

    shard=(rank, world_size) under torchrun: every rank draws the noise of every batch and
    scores its own slice of the batch's rows, and the per-window figures are gathered, so the
    result is the single-process one (up to summation order) on every rank.
    """
    if samples < 1:
        raise RedraftError(f"samples={samples}: expected >= 1")
    if estimator not in ("time", "count"):
        raise RedraftError(f"estimator={estimator!r}: expected 'time' or 'count'")
    rank, world_size = shard
    if estimator == "count" and cfg.diffusion.objective not in ("mdlm", "block", "ar"):
        raise RedraftError(f"estimator 'count' is the masked ELBO's; objective "
                           f"{cfg.diffusion.objective!r} is estimated by drawing t ('time')")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    draws = samples if cfg.diffusion.objective != "ar" else 1
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    per_window = []
    batch_size = batch_size or cfg.train.batch_size
    for x0 in eval_batches(tokens, cfg.model.seq_len, batch_size, max_batches):
        b, length = x0.shape
        lo, hi = rank * b // world_size, (rank + 1) * b // world_size
        # A rank with no rows of a small last batch still runs the model on one (and drops
        # it): under FSDP every forward is collective, so all ranks must make the same calls.
        x0 = x0[lo:max(hi, lo + 1)].to(device)
        total = torch.zeros(x0.shape[0], dtype=torch.float64, device=device)
        for _ in range(draws):
            noise = draw_noise(cfg.diffusion, b, length, mask_id, gen, 0.0, estimator, device,
                               vocab_size_of(model))
            rows = noise.rows(lo, lo + x0.shape[0]) if noise is not None else None
            losses = token_losses(model, x0, cfg.diffusion, mask_id, bos_id,
                                  autocast_dtype=dtype, noise=rows)
            total += losses.double().mean(dim=1)
        per_window.append((total / draws)[:hi - lo].cpu())
    model.train(was_training)
    if world_size > 1:
        import torch.distributed as dist

        gathered = [None] * world_size
        dist.all_gather_object(gathered, per_window)
        # Back into window order: batch by batch, rank by rank.
        per_window = [part for batch in zip(*gathered, strict=True) for part in batch]
    if not per_window:
        raise RedraftError("no validation windows: the validation split is empty")
    v = torch.cat(per_window)
    stderr = (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan")
    return v.mean().item(), stderr, len(v)


def report(nats: float, stderr: float, bytes_per_token: float) -> dict[str, float]:
    """One loss in every unit people compare: nats/token, bits/token, bits/byte, perplexity."""
    return {
        "nats_per_token": nats,
        "stderr_nats": stderr,
        "bits_per_token": nats / LN2,
        "bits_per_byte": nats / LN2 / bytes_per_token,
        "perplexity": math.exp(nats),
    }


def evaluate_checkpoint(path, corpus: str | None = None, samples: int = 4,
                        max_batches: int | None = None, device: str = "cpu",
                        estimator: str = "time") -> dict:
    """Validation figures of a checkpoint on its own corpus's validation split (or `corpus`)."""
    from redraft.checkpoint import load_checkpoint
    from redraft.train import load_data

    ckpt = load_checkpoint(path, device=device)
    cfg = ckpt.config
    if corpus is not None:
        cfg.data.corpus = corpus
    _, data = load_data(cfg.data, cfg.model.seq_len, ckpt.tokenizer)
    if not data.meta["val_tokens"]:
        raise RedraftError(f"corpus {cfg.data.corpus!r} has no validation split "
                           f"(data.val_fraction={cfg.data.val_fraction})")
    nats, err, windows = evaluate(ckpt.model, data.val, cfg, ckpt.tokenizer.mask_id,
                                  ckpt.tokenizer.eos_id, max_batches, samples=samples,
                                  estimator=estimator)
    out = {
        "checkpoint": str(ckpt.path),
        "objective": cfg.diffusion.objective,
        "process": cfg.diffusion.process if cfg.diffusion.objective != "ar" else None,
        "kind": "exact NLL" if cfg.diffusion.objective == "ar" else "NLL upper bound (ELBO)",
        "corpus": cfg.data.corpus,
        "windows": windows,
        "tokens": windows * cfg.model.seq_len,
        "mc_samples": samples if cfg.diffusion.objective != "ar" else None,
        "estimator": estimator if cfg.diffusion.objective != "ar" else None,
        **report(nats, err, data.val_bytes_per_token),
    }
    return out
