"""Training objectives as pure functions of (logits, x0, xt, t): no model, no state.

Each returns per-token losses in nats, shape (B, L): summing and dividing by the token
count gives an estimate of nats/token; for the diffusion ELBO this is an upper bound on the
negative log-likelihood, for the autoregressive twin it is the exact NLL.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from redraft.diffusion.schedules import Schedule


def sample_times(
    batch: int,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Low-discrepancy times t (B,) in (t_min, 1]: one offset u, t_i = 1 - ((u + i/B) mod 1).

    The B times are evenly spread over the interval (stratified), which lowers the variance of
    the ELBO estimate versus i.i.d. draws while keeping each t_i marginally uniform, so the
    estimate stays unbiased. 1 - (...) keeps t > 0 where the 1/t weight is finite.
    """
    u = torch.rand((), generator=generator, device=device)
    t = 1.0 - torch.remainder(u + torch.arange(batch, device=device) / batch, 1.0)
    return t_min + (1.0 - t_min) * t


def sample_mask_counts(
    batch: int,
    length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Low-discrepancy numbers of masked positions k (B,), each marginally uniform on {1..L}.

    k_i = 1 + floor(L * ((u + i/B) mod 1)): the same stratification as sample_times, on counts.
    """
    u = torch.rand((), generator=generator, device=device)
    frac = torch.remainder(u + torch.arange(batch, device=device) / batch, 1.0)
    return (1 + torch.floor(frac * length)).long().clamp(1, length)


def subs_log_probs(logits: torch.Tensor, xt: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The zero-masking, carry-over-unmasked ("SUBS", MDLM) denoiser log p_theta(x0 | xt).

    logits (B, L, V), xt (B, L) -> log-probs (B, L, V). The mask token gets probability 0 (x0
    is never a mask), and an unmasked position of xt is copied with probability 1 (an absorbing
    process never changes a revealed token). Used by samplers; the loss uses the cheaper path.
    """
    logits = logits.float().clone()
    logits[..., mask_id] = -math.inf
    log_p = torch.log_softmax(logits, dim=-1)
    carried = torch.full_like(log_p, -math.inf).scatter_(-1, xt[..., None], 0.0)
    return torch.where((xt == mask_id)[..., None], log_p, carried)


def masked_nll(logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor,
               mask_id: int) -> torch.Tensor:
    """-log p_theta(x0_l | xt) under SUBS at masked positions, 0 elsewhere, float32 (B, L).

    Cross-entropy is computed only where it counts (masked positions), mask column excluded.
    """
    masked = xt == mask_id  # (B, L)
    sel = logits[masked].float()  # (N, V)
    sel[:, mask_id] = -math.inf
    out = torch.zeros(x0.shape, dtype=torch.float32, device=x0.device)
    out[masked] = F.cross_entropy(sel, x0[masked], reduction="none")
    return out


def masked_elbo(
    logits: torch.Tensor,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule,
    mask_id: int,
) -> torch.Tensor:
    """Per-token continuous-time masked-diffusion ELBO (MDLM), nats, shape (B, L).

        -log p(x0) <= E_{t ~ U(0,1)} E_{xt ~ q(xt|x0)} [ sum_l 1[xt_l = mask]
                       * (-alpha'(t) / (1 - alpha(t))) * (-log p_theta(x0_l | xt)) ]

    with p_theta the SUBS parameterisation (mask logit removed, unmasked positions carried
    over, so they contribute exactly 0). logits (B, L, V), x0/xt (B, L), t (B,). For the
    log-linear schedule the weight is 1/t. Averaging the result over tokens, t and xt gives
    an unbiased estimate of the bound in nats/token.
    """
    weight = schedule.elbo_weight(t).to(torch.float32)  # (B,)
    return masked_nll(logits, x0, xt, mask_id) * weight[:, None]


def masked_elbo_by_count(
    logits: torch.Tensor,
    x0: torch.Tensor,
    xt: torch.Tensor,
    k: torch.Tensor,
    mask_id: int,
) -> torch.Tensor:
    """The same ELBO as masked_elbo with t integrated out analytically, nats, shape (B, L).

    Given that k of the L positions are masked, the ELBO weight integrates to exactly 1/k for
    every schedule: with u = 1 - alpha(t),
        int_0^1 (1/u) C(L, k) u^k (1 - u)^(L - k) du = C(L, k) B(k, L - k + 1) = 1/k.
    Hence, with k uniform on {1..L} and the masked set M uniform among sets of size k,

        -log p(x0) / L <= E_k E_M [ (1/k) sum_{l in M} -log p_theta(x0_l | xt) ],

    an unbiased estimator of the identical bound with less variance (the random number of
    masks at a given t is summed out). xt must have exactly k[b] masks in row b.
    """
    return masked_nll(logits, x0, xt, mask_id) * (x0.shape[1] / k.to(torch.float32))[:, None]


def ar_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token autoregressive NLL in nats (B, L); logits[:, i] (B, L, V) predict targets[:, i].

    The caller feeds the model [bos, x_0 .. x_{L-2}] so that all L tokens of the window are
    scored, exactly the tokens the diffusion bound scores.
    """
    B, L, V = logits.shape
    nll = F.cross_entropy(logits.float().reshape(B * L, V), targets.reshape(B * L),
                          reduction="none")
    return nll.view(B, L)
