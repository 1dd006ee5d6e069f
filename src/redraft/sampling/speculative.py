"""Speculative sampling: accept drafted tokens so that the output's law is exactly the verifier's.

Leviathan et al. 2023, Chen et al. 2023. A drafter proposes d_1..d_m, each d_i drawn from its
own distribution q_i (which may ignore the tokens before it); one verifier call gives p_0..p_m,
p_i the next-token distribution after the prefix and d_1..d_i. Then, left to right:

    accept d_i with probability min(1, p_{i-1}(d_i) / q_i(d_i));
    at the first rejection draw the token from norm(max(0, p_{i-1} - q_i)) and stop;
    if all m are accepted draw one more token from p_m (the bonus).

Each committed token is then distributed exactly as p given everything before it, so a row's
text has the verifier's law whatever the drafter, and every call commits at least one token.
Temperature, top-k and top-p are applied to p and q alike (the law is the verifier's under
those knobs: categorical.probabilities); temperature 0 makes both one-hot, so a draft is
accepted iff it is the verifier's argmax and the output is greedy decoding token for token.

All of it is float64, batched over rows with their own draft counts, and each row consumes a
fixed number of uniforms of its own stream per call, so results never depend on the batch.
"""

from __future__ import annotations

import torch

from redraft.sampling.categorical import sample


def accept(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, n_drafts: torch.Tensor,
           u_accept: torch.Tensor, u_draw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One verification of R rows: (accepted (R,) long, tokens (R, m + 1) long).

    p (R, m + 1, V) float64: the verifier's distributions after the prefix and each draft;
    q (R, m, V) float64: the drafter's, d_i ~ q_i; drafts (R, m) long; n_drafts (R,) long, the
    valid drafts of each row (<= m; the rest are padding). u_accept (R, m) and u_draw (R,)
    uniforms in [0, 1). A row commits tokens[:accepted + 1]: its accepted drafts, then the
    token drawn at the first rejection (or the bonus after them all).
    """
    R, m = drafts.shape
    if m:
        pd = p[:, :m].gather(-1, drafts[..., None])[..., 0]  # (R, m) p_{i-1}(d_i)
        qd = q.gather(-1, drafts[..., None])[..., 0]  # (R, m) q_i(d_i) > 0: d_i was drawn
        ok = u_accept * qd < pd  # u < p/q without dividing (q may round to 0 in float64)
        ok &= torch.arange(m, device=drafts.device)[None, :] < n_drafts[:, None]
        accepted = ok.long().cumprod(dim=1).sum(dim=1)  # (R,) leading accepted drafts
    else:
        accepted = torch.zeros(R, dtype=torch.long, device=drafts.device)
    rows = torch.arange(R, device=drafts.device)
    target = p[rows, accepted]  # (R, V): p after the accepted drafts
    rejected = accepted < n_drafts
    if m and bool(rejected.any()):
        q_at = q[rows, accepted.clamp(max=m - 1)]
        residual = (target - q_at).clamp_min(0)
        mass = residual.sum(-1, keepdim=True)
        # A rejection implies p(d) < q(d), hence p != q and the residual has mass; the guard
        # only covers float64 rounding at that edge.
        residual = torch.where(mass > 0, residual / mass.clamp_min(1e-300), target)
        target = torch.where(rejected[:, None], residual, target)
    last = sample(target, u_draw)
    tokens = torch.cat((drafts, drafts.new_zeros(R, 1)), dim=1)
    tokens[rows, accepted] = last
    return accepted, tokens
