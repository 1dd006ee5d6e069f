"""Validation likelihood: the diffusion NLL bound (Monte Carlo over t) and the AR twin's exact NLL.

Both score the same windows of the same validation tokens, so the numbers compare directly;
bits/byte (total bits over the UTF-8 bytes those tokens decode to) compares across tokenizers.
"""

from __future__ import annotations

import copy
import math

import torch

from redraft.config import Config
from redraft.data import eval_batches
from redraft.diffusion import objective
from redraft.display import progress_bar
from redraft.errors import RedraftError
from redraft.losses import draw_hybrid_noise, draw_noise, token_losses, vocab_size_of

LN2 = math.log(2.0)


@torch.no_grad()
def evaluate(model, tokens, cfg: Config, mask_id: int, bos_id: int, max_batches: int | None,
             samples: int = 1, seed: int = 1234, dtype: torch.dtype | None = None,
             batch_size: int | None = None, estimator: str = "time",
             shard: tuple[int, int] = (0, 1), progress: bool = False, part: str = "ar"):
    """(mean nats/token, standard error, windows) over validation windows of `tokens`.

    For diffusion each window gets `samples` Monte Carlo draws of (t, xt) with t integrated
    over all of (0, 1] (no t_min), so the mean estimates the true ELBO; the standard error is
    over per-window means. estimator "count" draws the number of masks instead (the same bound,
    t integrated out analytically, lower variance). The noise is seeded, so repeated
    evaluations are comparable.

    shard=(rank, world_size) under torchrun: every rank draws the noise of every batch and
    scores its own slice of the batch's rows, and the per-window figures are gathered, so the
    result is the single-process one (up to summation order) on every rank. `progress` shows
    a bar over the batches on a terminal.

    A hybrid scores its AR mode's exact NLL (part "ar"), or with part "draft" its block
    mode's bound: the draft blocks' ELBO over every block, given the clean tokens before it.
    """
    if samples < 1:
        raise RedraftError(f"samples={samples}: expected >= 1")
    if estimator not in ("time", "count"):
        raise RedraftError(f"estimator={estimator!r}: expected 'time' or 'count'")
    rank, world_size = shard
    obj = objective(cfg.diffusion.objective)
    if estimator == "count" and not (obj.count_estimator or obj.autoregressive):
        raise RedraftError(f"estimator 'count' is the masked ELBO's; objective "
                           f"{obj.name!r} is estimated by drawing t ('time')")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bound = obj.hybrid and part == "draft"
    draws = 1 if obj.autoregressive and not bound else samples
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    per_window = []
    batch_size = batch_size or cfg.train.batch_size
    n_batches = len(range(0, len(tokens) // cfg.model.seq_len, batch_size)[:max_batches])
    batches = progress_bar(eval_batches(tokens, cfg.model.seq_len, batch_size, max_batches),
                           enabled=progress and rank == 0, total=n_batches, desc="eval",
                           unit="batch")
    for x0 in batches:
        b, length = x0.shape
        lo, hi = rank * b // world_size, (rank + 1) * b // world_size
        # A rank with no rows of a small last batch still runs the model on one (and drops
        # it): under FSDP every forward is collective, so all ranks must make the same calls.
        x0 = x0[lo:max(hi, lo + 1)].to(device)
        total = torch.zeros(x0.shape[0], dtype=torch.float64, device=device)
        for _ in range(draws):
            if bound:  # every block drafted, block diffusion's noise levels
                noise = draw_hybrid_noise(cfg.diffusion, b, length, mask_id, gen, 0.0, 1.0,
                                          estimator, device, share=1.0, all_masked=False)
            elif obj.autoregressive:  # exact NLL (a hybrid's AR mode): nothing to draw
                noise = None
            else:
                noise = draw_noise(cfg.diffusion, b, length, mask_id, gen, 0.0, estimator,
                                   device, vocab_size_of(model))
            rows = noise.rows(lo, lo + x0.shape[0]) if noise is not None else None
            losses = token_losses(model, x0, cfg.diffusion, mask_id, bos_id,
                                  autocast_dtype=dtype, noise=rows,
                                  part="draft" if bound else "ar")
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


@torch.no_grad()
def evaluate_in_order(model, tokens, cfg: Config, mask_id: int, bos_id: int,
                      max_batches: int | None, batch_size: int | None = None):
    """(mean nats/token, standard error, windows) of a block model decoded left to right
    inside each block (diffusion.block.in_order_nll), on the windows `evaluate` scores: an
    exact NLL, not a bound, for comparing with the block ELBO of the same weights."""
    from redraft.diffusion.block import in_order_nll

    if not objective(cfg.diffusion.objective).blockwise:
        raise RedraftError(f"in-order NLL needs a block model, got objective "
                           f"{cfg.diffusion.objective!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_window = [in_order_nll(model, x0.to(device), cfg.diffusion.block_shift, mask_id,
                               bos_id).double().mean(dim=1).cpu()
                  for x0 in eval_batches(tokens, cfg.model.seq_len,
                                         batch_size or cfg.train.batch_size, max_batches)]
    model.train(was_training)
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


def evaluate_model(model, corpus: str | None = None, samples: int = 4,
                   max_batches: int | None = None, estimator: str = "time",
                   progress: bool = True) -> dict:
    """Validation figures of a redraft.Model on its own corpus's validation split (or
    `corpus`). progress: a bar on stderr where one belongs (display.show_progress)."""
    from redraft.data import load_data

    cfg = _config_for(model, corpus) if model.config is None else copy.deepcopy(model.config)
    if corpus is not None:
        cfg.data.corpus = corpus
    _, data = load_data(cfg.data, cfg.model.seq_len, model.tokenizer)
    if not data.meta["val_tokens"]:
        raise RedraftError(f"corpus {cfg.data.corpus!r} has no validation split "
                           f"(data.val_fraction={cfg.data.val_fraction})")
    nats, err, windows = evaluate(model.backbone, data.val, cfg, model.tokenizer.mask_id,
                                  model.tokenizer.eos_id, max_batches, samples=samples,
                                  estimator=estimator, progress=progress)
    obj = model.objective
    extra = {}
    if obj.hybrid:  # beside the AR mode's exact NLL, the block mode's bound
        b_nats, b_err, _ = evaluate(model.backbone, data.val, cfg, model.tokenizer.mask_id,
                                    model.tokenizer.eos_id, max_batches, samples=samples,
                                    estimator=estimator, progress=progress, part="draft")
        extra = {"block_bound": report(b_nats, b_err, data.val_bytes_per_token)}
    return {
        "checkpoint": str(model.path) if model.path is not None else model.name,
        "objective": obj.name,
        "process": None if obj.autoregressive else cfg.diffusion.process,
        "kind": obj.bound,
        "corpus": cfg.data.corpus,
        "windows": windows,
        "tokens": windows * cfg.model.seq_len,
        "mc_samples": None if obj.autoregressive else samples,
        "estimator": None if obj.autoregressive else estimator,
        **report(nats, err, data.val_bytes_per_token),
        **extra,
    }


EVAL_WINDOW = 1024  # tokens per window for a model without a training config (a long context)


def _config_for(model, corpus: str | None):
    """An evaluation config for a model trained elsewhere (a Hugging Face model): the given
    corpus, windows of min(its context, EVAL_WINDOW) tokens, its objective and process. For a
    masked model the continuous-time ELBO does not depend on the schedule, so redraft's
    default one estimates the same bound."""
    from redraft.config import Config

    if corpus is None:
        raise RedraftError(f"model {model.name!r} has no training config: nothing says which "
                           "corpus its validation split is; give one (--corpus)")
    cfg = Config()
    cfg.model.seq_len = min(model.seq_len, EVAL_WINDOW)
    cfg.diffusion.objective = model.objective.name
    if model.process is not None:
        cfg.diffusion.process = model.process.name
    return cfg
