"""log p(continuation | context) for any redraft Model: exact for the AR twin, a Monte Carlo
bound for diffusion. What lm-eval's `loglikelihood` and `loglikelihood_rolling` ask for
(redraft/lm_eval.py), usable on its own.

AR (exact):   log p(c | x) = sum_i log p(c_i | [bos] x c_<i)     (one causal pass)

Diffusion: the context stays clean and only the continuation is noised, so the model's ELBO
over the continuation bounds its conditional log-likelihood,

    log p(c | x) >= -E_{t, ct ~ q(. | c, t)} [ L_theta(c, [x ct], t) ]

with L the objective's own per-token loss (diffusion.registry) summed over the continuation.
Estimators over S draws (`samples`):

    count (masked denoisers, not block: the default there) draw k uniform on 1..n (n tokens in
          the continuation; stratified over the draws), mask k of the n uniformly, weight n/k:
          -log p(c | x) <= E_k E_M [ (n/k) sum_{i in M} -log p_theta(c_i | x, c with M masked) ]
          (t integrated out: masked_elbo_by_count's identity on the continuation alone).
          A one-token continuation has k = 1 always: the estimate is exact, the denoiser's
          -log p(c | x, mask), with no variance.
    time  draw t (stratified), noise each continuation token as training does, score with the
          objective's bound; block models draw one t per block (diffusion/block.py) and score
          the block ELBO of the continuation's positions given the clean blocks before.

Each call reports the mean over the draws and its standard error (std / sqrt(S)). The noise is
seeded by `seed` and the request's own tokens, so a request's figure does not depend on which
other requests are scored with it, nor in which order.

Long inputs: the context is cut from the left so the canvas fits the model (AR: [bos] context
continuation minus its last token fits seq_len; diffusion: context + continuation fits
seq_len). A continuation longer than seq_len is scored by the chain rule in pieces of
seq_len // 2 tokens, each given everything before it that fits (exact for AR, a sum of bounds
for diffusion).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from redraft.diffusion import ar_cross_entropy, masked_nll, sample_mask_counts, sample_times
from redraft.errors import RedraftError

ESTIMATORS = ("count", "time")


@dataclass
class Conditional:
    """The score of one continuation given its context."""

    logprob: float
    """log p(continuation | context) in nats: exact (AR) or the bound's estimate (diffusion:
    minus the ELBO's Monte Carlo mean, a lower bound on log p in expectation)."""
    stderr: float
    """Standard error of logprob over the draws (0 for the AR twin; nan with one draw)."""
    greedy: bool
    """AR: every continuation token is the argmax given the true tokens before it. Masked
    diffusion (mdlm, block): every continuation token is the argmax of the denoiser with the
    whole continuation masked (one-step greedy; block models given the true earlier blocks).
    Other objectives: False (their logits are not a denoiser over a masked canvas)."""
    tokens: int
    """Tokens in the continuation."""
    samples: int
    """Monte Carlo draws (1 for the AR twin)."""


def request_seed(seed: int, context: Sequence[int], continuation: Sequence[int]) -> int:
    """A seed of the request itself (seed and its tokens), independent of its neighbours."""
    blob = f"{seed}|{list(context)}|{list(continuation)}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:7], "big")


def default_estimator(model) -> str:
    return "count" if model.objective.count_estimator and not model.objective.blockwise \
        else "time"


@torch.no_grad()
def score(model, context: Sequence[int], continuation: Sequence[int], *, samples: int = 16,
          seed: int = 0, estimator: str | None = None) -> Conditional:
    """log p(continuation | context) of token ids (see the module docstring)."""
    context, continuation = [int(i) for i in context], [int(i) for i in continuation]
    n = len(continuation)
    if n == 0:
        raise RedraftError("the continuation is empty: nothing to score")
    if n > model.seq_len:  # the chain rule over pieces of half a context, each given all before
        step = max(1, model.seq_len // 2)
        parts = [score(model, context + continuation[:a], continuation[a:a + step],
                       samples=samples, seed=seed, estimator=estimator)
                 for a in range(0, n, step)]
        return Conditional(sum(p.logprob for p in parts),
                           math.sqrt(sum(p.stderr ** 2 for p in parts)),
                           all(p.greedy for p in parts), n, parts[0].samples)
    if model.scorer.exact:
        return _score_ar(model, context, continuation)
    if not isinstance(samples, int) or samples < 1:
        raise RedraftError(f"samples={samples!r}: expected an integer >= 1")
    estimator = estimator or default_estimator(model)
    if estimator not in ESTIMATORS:
        raise RedraftError(f"estimator {estimator!r}: expected one of {list(ESTIMATORS)}")
    if estimator == "count" and (not model.objective.count_estimator
                                 or model.objective.blockwise):
        raise RedraftError(f"estimator 'count' needs a masked (mdlm) model; {model.name!r} is "
                           f"{model.objective.name!r}: use 'time'")
    canvas = (context + continuation)[-model.seq_len:]
    L = len(canvas)
    x0 = torch.tensor([canvas], dtype=torch.long, device=model.device)  # (1, L)
    scored = torch.zeros(1, L, dtype=torch.bool, device=model.device)
    scored[:, L - n:] = True
    gen = torch.Generator(device=model.device)
    gen.manual_seed(request_seed(seed, context, continuation))
    if estimator == "count":
        per = _count_draws(model, x0, n, samples, gen)
    else:
        per = _time_draws(model, x0, scored, samples, gen)
    err = (per.std() / math.sqrt(samples)).item() if samples > 1 else float("nan")
    return Conditional(-per.mean().item(), err, _greedy_diffusion(model, x0, n), n, samples)


def _score_ar(model, context: list[int], continuation: list[int]) -> Conditional:
    ids = ([model.tokenizer.eos_id] + context + continuation)[-(model.seq_len + 1):]
    x = torch.tensor([ids[:-1]], dtype=torch.long, device=model.device)
    logits = model.backbone(x)[:, -len(continuation):]  # (1, n, V): predict the continuation
    target = torch.tensor([continuation], dtype=torch.long, device=model.device)
    nats = ar_cross_entropy(logits, target).double().sum().item()
    greedy = bool((logits.argmax(-1) == target).all())
    return Conditional(-nats, 0.0, greedy, len(continuation), 1)


def _count_draws(model, x0: torch.Tensor, n: int, samples: int,
                 gen: torch.Generator) -> torch.Tensor:
    """(S,) float64: (n/k) sum of -log p over k masked continuation tokens, per draw."""
    S, L = samples, x0.shape[1]
    mask_id = model.tokenizer.mask_id
    k = sample_mask_counts(S, n, gen, device=x0.device)  # (S,) in 1..n
    u = torch.rand((S, n), generator=gen, device=x0.device)
    chosen = u.argsort(dim=1).argsort(dim=1) < k[:, None]  # k uniform positions of n
    masked = torch.zeros(S, L, dtype=torch.bool, device=x0.device)
    masked[:, L - n:] = chosen
    xt = torch.where(masked, mask_id, x0.expand(S, -1))
    logits = model.backbone(xt, k.float() / n)  # t: the continuation's mask rate
    nll = masked_nll(logits, x0.expand(S, -1), xt, mask_id).double().sum(dim=1)
    return nll * n / k.double()


def _time_draws(model, x0: torch.Tensor, scored: torch.Tensor, samples: int,
                gen: torch.Generator) -> torch.Tensor:
    """(S,) float64: the objective's bound over the continuation, one t (or one t per block)
    per draw, the context left clean."""
    from redraft.losses import Noise, draw_block_noise, token_losses

    S, L = samples, x0.shape[1]
    cfg = model.diffusion_config()
    mask_id, dev = model.tokenizer.mask_id, x0.device
    if model.objective.blockwise:
        drawn = draw_block_noise(cfg, S, L, mask_id, gen, device=dev)
        masked, values, t = drawn.masked, drawn.values, drawn.t
    else:
        t = sample_times(S, gen, device=dev)
        masked, values = model.process.replacement((S, L), t, gen, dev)
    masked = masked & scored
    noise = Noise(masked, values, t, None, 1.0, scored.expand(S, -1))
    per = token_losses(model.backbone, x0.expand(S, -1), cfg, mask_id, model.tokenizer.eos_id,
                       noise=noise, weighting="elbo")
    return (per * scored).double().sum(dim=1)


def _greedy_diffusion(model, x0: torch.Tensor, n: int) -> bool:
    """Whether the denoiser's argmax, the whole continuation masked, is the continuation."""
    if not model.objective.masked_denoiser:
        return False
    L = x0.shape[1]
    mask_id = model.tokenizer.mask_id
    xt = x0.clone()
    xt[:, L - n:] = mask_id
    ones = torch.ones(1, L, device=x0.device)
    if model.objective.blockwise:
        from redraft.diffusion.block import block_inputs

        cfg = model.diffusion_config()
        yt, y0 = block_inputs(xt, x0, cfg.block_size, cfg.block_shift, model.tokenizer.eos_id)
        logits = model.backbone(yt, ones, x0=y0)
    else:
        logits = model.backbone(xt, ones[:, 0])
    logits = logits[:, L - n:].clone()
    logits[..., mask_id] = -math.inf
    return bool((logits.argmax(-1) == x0[:, L - n:]).all())


def rolling_windows(n_tokens: int, seq_len: int) -> list[tuple[int, int]]:
    """(start, end) of the continuation windows that score a text of n_tokens once each: the
    first takes the model's whole context, each later one half of it, scored given all the
    text before it that fits (score() cuts the context from the left)."""
    if n_tokens <= 0:
        return []
    stride = max(1, seq_len // 2)
    windows, start = [(0, min(n_tokens, seq_len))], min(n_tokens, seq_len)
    while start < n_tokens:
        windows.append((start, min(n_tokens, start + stride)))
        start = windows[-1][1]
    return windows


def score_rolling(model, ids: Sequence[int], *, samples: int = 16, seed: int = 0,
                  estimator: str | None = None) -> Conditional:
    """log p(text) of a text of any length (token ids): the sum over rolling_windows of each
    window's score given the text before it (AR: exact, conditioned on BOS at the start;
    diffusion: the sum of the windows' bounds). Standard errors add in quadrature."""
    ids = [int(i) for i in ids]
    total, var, greedy = 0.0, 0.0, True
    draws = 1
    for start, end in rolling_windows(len(ids), model.seq_len):
        part = score(model, ids[:start], ids[start:end], samples=samples, seed=seed,
                     estimator=estimator)
        total, greedy, draws = total + part.logprob, greedy and part.greedy, part.samples
        var += part.stderr ** 2
    return Conditional(total, math.sqrt(var), greedy, len(ids), draws)
