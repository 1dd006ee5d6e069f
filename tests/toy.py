"""Exact quantities of every process on the enumerable toy distribution of test_diffusion.

All sequences of length L = 3 over V = 3 symbols (ids 0..2), mask id 3, vocabulary 4: small
enough that posteriors, concrete scores and denoisers are sums over 27 sequences.
"""

from __future__ import annotations

import torch

from redraft.diffusion import (
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    MaskProcess,
    MixtureProcess,
    UniformProcess,
    masked_elbo,
    sedd_loss,
    uniform_elbo,
)
from tests.diffusion.test_masked import MASK, L, V, toy_distribution  # noqa: F401

VOCAB = V + 1

# (process, objective, schedule): every combination, spread over the four schedules.
COMBOS = [
    ("mask", "mdlm", LogLinearSchedule()),
    ("mask", "sedd", CosineSchedule()),
    ("mask", "udlm", LogLinearSchedule()),
    ("uniform", "sedd", LogLinearSchedule(1e-3)),
    ("uniform", "udlm", GeometricSchedule()),
    ("mixture", "sedd", LinearSchedule(1e-3)),
    ("mixture", "udlm", LogLinearSchedule()),
]
IDS = [f"{p}-{o}-{s.name}" for p, o, s in COMBOS]


def make(process: str, schedule):
    if process == "mask":
        return MaskProcess(MASK, schedule, VOCAB)
    if process == "uniform":
        return UniformProcess(VOCAB, MASK, schedule)
    return MixtureProcess(VOCAB, MASK, schedule, mask_share=0.4)


def objective_fn(objective: str):
    if objective == "mdlm":
        return lambda logits, x0, xt, t, proc: masked_elbo(logits, x0, xt, t, proc.schedule,
                                                           proc.mask_id)
    return {"sedd": sedd_loss, "udlm": uniform_elbo}[objective]


def _kernel(proc, t):
    """q_t(y | x) (N, V, V) float64 for each row's t (N,): [n, x, y]."""
    a = proc.schedule.alpha(t.double())[:, None, None]
    return a * torch.eye(VOCAB, dtype=torch.float64) + (1 - a) * proc.noise()[None, None, :]


def exact_quantities(proc, xt, t, seqs, p):
    """(score (N, L, VOCAB), hidden-position denoiser (N, L, VOCAB)) by enumeration.

    score[n, l, y] = p_t(xt with position l set to y) / p_t(xt); hidden[n, l, v] =
    p(x0_l = v | xt without position l), the denoiser at which the mean parameterisation's
    plug-in ratio equals the true score.
    """
    k = _kernel(proc, t)  # (N, V, V)
    n = xt.shape[0]
    # lik[n, s, l] = q_t(xt[n, l] | seqs[s, l])
    lik = k[torch.arange(n)[:, None, None], seqs[None, :, :], xt[:, None, :]]
    joint = p[None, :] * lik.prod(-1)  # (N, S)
    post = joint / joint.sum(-1, keepdim=True)
    to_y = k[torch.arange(n)[:, None, None], seqs[None, :, :], :]  # (N, S, L, V): q(y | x0_l)
    ratio = torch.where(lik[..., None] > 0, to_y / lik[..., None].clamp_min(1e-300), 0.0)
    score = torch.einsum("ns,nslv->nlv", post, ratio)
    onehot = torch.nn.functional.one_hot(seqs, VOCAB).double()  # (S, L, V)
    hidden = []
    for pos in range(L):
        others = torch.cat([lik[..., :pos], lik[..., pos + 1:]], -1).prod(-1)  # (N, S)
        w = p[None, :] * others
        hidden.append(torch.einsum("ns,sv->nv", w, onehot[:, pos]) / w.sum(-1, keepdim=True))
    return score, torch.stack(hidden, 1)


def exact_logits(objective, proc, xt, t, seqs, p):
    """What a perfect network trained with `objective` would output, float64 (N, L, VOCAB)."""
    score, hidden = exact_quantities(proc, xt, t, seqs, p)
    if objective == "sedd":
        log_s = score.clamp_min(1e-300).log()
        if proc.name == "mask":  # undo the parameterisation's log(alpha / (1 - alpha)) offset
            a = proc.schedule.alpha(t.double())[:, None, None]
            # At alpha = 0 the offset is -inf and the score 0: any finite logits will do.
            log_s = torch.where(a > 0, log_s - (a.clamp_min(1e-300).log() - torch.log1p(-a)),
                                0.0)
        return log_s
    # mdlm (SUBS) wants p(x0_l | xt), which equals `hidden` at masked positions (a mask says
    # nothing about its own token) and is ignored elsewhere; udlm wants `hidden` itself.
    return hidden.clamp_min(1e-300).log()


class ExactModel(torch.nn.Module):
    """Stands in for a time-conditioned backbone: the exact network for `objective`."""

    # models.Backbone; time-conditioned: generate_diffusion must call it every step
    seq_len, time_conditioned, causal, device = L, True, False, torch.device("cpu")

    def __init__(self, objective: str, proc):
        super().__init__()
        self.vocab_size = VOCAB
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.objective, self.proc = objective, proc
        self.seqs, self.p = toy_distribution()

        # Every canvas the sampler can meet, to look rows up in instead of enumerating per row.
        self.canvases = torch.cartesian_prod(*[torch.arange(VOCAB)] * L)  # (VOCAB^L, L)
        self.code = VOCAB ** torch.arange(L - 1, -1, -1)

    def forward(self, xt, t=None):
        assert (t == t[0]).all()  # the generate loop uses one t per step
        tt = t[:1].double().expand(len(self.canvases))
        table = exact_logits(self.objective, self.proc, self.canvases, tt, self.seqs, self.p)
        # Canvases impossible at this t (zero probability) get NaN rows: never looked up.
        return table[(xt * self.code).sum(-1)]
