"""The continuous-time bound for any resample-from-pi process, and two parameterisations of it.

Score entropy (SEDD, Lou et al. 2024). The reverse of the forward chain (processes.py) jumps
x -> y, for y one token edit away from x, at rate R(y -> x) * p_t(y) / p_t(x). A model gives
the ratios ("concrete score") s(x)_y ~ p_t(y) / p_t(x) per position; then, per position l with
xt_l = i and the forward rate into i, R(y -> i) = dsigma(t) pi_i, for every y != i:

    -log p(x0) <= int_0^1 E_{xt ~ q(.|x0)} sum_l dsigma(t) pi_i
                   sum_{y != i} [ s_y - r_y log s_y + K(r_y) ] dt  +  sum_l KL(q(x1_l|x0_l) || pi)

with r_y = q(xt_l = y | x0_l) / q(xt_l = i | x0_l) and K(r) = r log r - r, the constant that
makes each bracket >= 0 and exactly 0 at s = r (the denoising score entropy, DSE). The bound
is tight, equal to the NLL, when s is the true score; y ranges over process.states().

Two ways to turn logits into s:
  * "sedd" (sedd_log_score): the network outputs the log-score directly, s = exp(logits).
    For the mask process it is offset by log(alpha / (1 - alpha)), SEDD's absorbing scaling,
    which makes s -> 0 as t -> 1 (so the bound stays finite with eps = 0) and leaves the
    logits to predict log p(x0 | xt) up to a constant.
  * "udlm" (mean_log_score): the network outputs a denoiser x^ = softmax(logits) over non-mask
    ids and s_y = q_t(y | x^) / q_t(i | x^), q_t(. | x^) = alpha x^ + (1 - alpha) pi: the
    reverse rates of plugging x^ in for x0 (UDLM, Duo). For the uniform process the bound
    then is UDLM's continuous-time ELBO (tested against its closed form); for the mask
    process it is MDLM's. The true score is reached at x^_l = p(x0_l | xt with position l
    hidden), since p_t(y, rest) = sum_v p(x0_l = v, rest) q_t(y | v) is affine in y's column.
"""

from __future__ import annotations

import math

import torch

from redraft.diffusion.processes import Process


def score_entropy(log_score: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                  process: Process) -> torch.Tensor:
    """Per-token DSE integrand plus prior term, nats (B, L); log_score (B, L, V), t (B,).

    Averaging over tokens, t ~ U(0, 1] and xt ~ q(xt | x0) gives an unbiased estimate of the
    bound above in nats/token. Computed in float64 when log_score is float64, else float32.
    """
    dtype = torch.promote_types(log_score.dtype, torch.float32)
    V = log_score.shape[-1]
    log_score = log_score.to(dtype)
    tt = t.to(torch.float64)
    alpha = process.schedule.alpha(tt)[:, None, None]  # (B, 1, 1)
    pi = process.noise(x0.device)  # (V,)
    onehot = torch.nn.functional.one_hot(x0, V).to(torch.float64)
    q = alpha * onehot + (1.0 - alpha) * pi  # q(. | x0) (B, L, V)
    r = (q / q.gather(-1, xt[..., None])).to(dtype)  # (B, L, V)
    weight = (process.schedule.dsigma(tt)[:, None] * pi[xt]).to(dtype)  # (B, L)
    use = process.states(x0.device) & (torch.arange(V, device=x0.device) != xt[..., None])
    active = use & (weight > 0)[..., None]  # (B, L, V)
    # Inactive entries are replaced before exp/log so that no inf reaches the backward pass.
    ls = torch.where(active, log_score, torch.zeros_like(log_score))
    r = torch.where(active, r, torch.zeros_like(r))
    r_log_r = torch.where(r > 0, r * torch.log(torch.where(r > 0, r, 1.0)), 0.0)
    r_log_s = torch.where(r > 0, r * ls, 0.0)
    bracket = torch.where(active, torch.exp(ls) - r_log_s + r_log_r - r, 0.0).sum(-1)  # (B, L)
    # alpha(1) = 0 makes dsigma(1) infinite where the bracket is exactly 0 (s = r = 1).
    dse = torch.where(bracket == 0, 0.0, weight * bracket)
    return (dse + process.prior_kl(x0).to(dtype)).to(
        torch.float64 if dtype == torch.float64 else torch.float32)


# Samplers pass alpha_floor=ALPHA_FLOOR: at alpha(t) = 0 a score is all zeros (mask) or all
# ones (uniform) and carries no information, while alpha = 1e-8 keeps the model's relative
# scores and changes a distribution by at most L * 1e-8 in total variation. Losses use the
# exact alpha (floor 0), so the bound stays exact.
ALPHA_FLOOR = 1e-8


def _alpha(process: Process, t: torch.Tensor, alpha_floor: float) -> torch.Tensor:
    return process.schedule.alpha(t.to(torch.float64)).clamp_min(alpha_floor)[:, None, None]


def _log_alpha_terms(process: Process, t: torch.Tensor, dtype,
                     alpha_floor: float = 0.0) -> tuple[torch.Tensor, ...]:
    alpha = _alpha(process, t, alpha_floor)
    return torch.log(alpha).to(dtype), torch.log1p(-alpha).to(dtype)


def sedd_log_score(logits: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                   process: Process, alpha_floor: float = 0.0) -> torch.Tensor:
    """log s (B, L, V) of a score-parameterised network: the logits themselves, plus
    log(alpha / (1 - alpha)) for the mask process (see the module docstring)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits = logits.to(dtype)
    if process.name != "mask":
        return logits
    alpha = _alpha(process, t, alpha_floor)
    return logits + (torch.log(alpha) - torch.log1p(-alpha)).to(dtype)


def denoiser_log_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log x^ (B, L, V): softmax over the non-mask ids (x0 is never the mask)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).clone()
    logits[..., mask_id] = -math.inf
    return torch.log_softmax(logits, dim=-1)


def mean_log_score(logits: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                   process: Process, log_x_hat: torch.Tensor | None = None,
                   alpha_floor: float = 0.0) -> torch.Tensor:
    """log s (B, L, V) with s_y = q_t(y | x^) / q_t(xt | x^), x^ from logits (or log_x_hat)."""
    if log_x_hat is None:
        log_x_hat = denoiser_log_probs(logits, process.mask_id)
    dtype = log_x_hat.dtype
    log_a, log_1ma = _log_alpha_terms(process, t, dtype, alpha_floor)
    log_pi = torch.log(process.noise(xt.device)).to(dtype)  # -inf off pi's support
    # Clamp -inf (ids off the support) to a finite floor: logaddexp(-inf, -inf) has a NaN
    # gradient, which softmax's backward would spread over every id.
    floor = -1e9
    log_q = torch.logaddexp((log_a + log_x_hat).clamp_min(floor),
                            (log_1ma + log_pi).clamp_min(floor))  # log q_t(. | x^)
    return log_q - log_q.gather(-1, xt[..., None])


def sedd_loss(logits, x0, xt, t, process: Process) -> torch.Tensor:
    """Score entropy with s = exp(logits) (SEDD): per-token nats (B, L), a bound on NLL."""
    return score_entropy(sedd_log_score(logits, xt, t, process), x0, xt, t, process)


def uniform_elbo(logits, x0, xt, t, process: Process) -> torch.Tensor:
    """The mean-parameterised (UDLM/Duo) continuous-time ELBO: per-token nats (B, L)."""
    return score_entropy(mean_log_score(logits, xt, t, process), x0, xt, t, process)


def log_score(parameterisation: str, logits: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
              process: Process, alpha_floor: float = 0.0) -> torch.Tensor:
    """The concrete score a model's logits imply, log s (B, L, V), by their parameterisation
    (diffusion.registry): "score" (SEDD) or a denoiser ("subs", "mean").

    MDLM's "subs" and UDLM's "mean" are both denoiser (mean) parameterisations: for the mask
    process SUBS's x^ at masked positions is the same softmax over non-mask ids, and unmasked
    positions have no reverse rates (pi_i = 0), so the plug-in ratio serves both.
    """
    if parameterisation == "score":
        return sedd_log_score(logits, xt, t, process, alpha_floor)
    return mean_log_score(logits, xt, t, process, alpha_floor=alpha_floor)
