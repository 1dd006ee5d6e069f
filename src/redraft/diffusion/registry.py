"""What kinds of diffusion exist: the noise processes by name (`make_process`) and the
objectives, one entry each: the only place an objective's name is looked at.

An objective fixes what the network's logits mean (its parameterisation), which attention it
needs, which noise processes it is defined for, the loss it trains on and reports, and the
sampler a user gets by default. Everything else in redraft asks the entry (`objective(name)`)
instead of comparing names:

    name   processes               logits are                      attention      reported loss
    ar     -                       next-token distribution          causal         exact NLL
    mdlm   mask                    SUBS denoiser p(x0 | xt)         bidirectional  masked ELBO
    udlm   mask, uniform, mixture  mean denoiser (UDLM / Duo)       bidirectional  ELBO
    sedd   mask, uniform, mixture  log concrete score (SEDD)        bidirectional  score entropy
    block  mask                    SUBS denoiser inside blocks      block-causal   block ELBO
    hybrid mask                    next-token (clean stream) and    causal +       exact NLL
                                   SUBS denoiser (draft blocks)     draft blocks   (AR mode)

To add an objective: write its loss as a pure function in objectives.py or score_entropy.py,
then add one `Objective` here. To add a process: a small file with a Process subclass
(processes.py says what it needs), then one line in PROCESSES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from redraft.diffusion.mixture import MixtureProcess
from redraft.diffusion.objectives import masked_elbo
from redraft.diffusion.processes import MaskProcess, Process
from redraft.diffusion.schedules import make_schedule
from redraft.diffusion.score_entropy import sedd_loss, uniform_elbo
from redraft.diffusion.uniform import UniformProcess
from redraft.errors import RedraftError

# name -> class; each takes (vocab_size, mask_id, schedule, **knobs).
PROCESSES = {"mask": MaskProcess, "uniform": UniformProcess, "mixture": MixtureProcess}


def make_process(name: str = "mask", schedule: str = "loglinear", *, mask_id: int,
                 vocab_size: int | None = None, schedule_eps: float | None = None,
                 mask_share: float = 0.5) -> Process:
    """The process `name` ("mask", "uniform", "mixture") on schedule `schedule` (with alpha(1) =
    schedule_eps, None: the schedule's default). vocab_size (the model's) is needed by every
    process but the mask one, whose noise is a single id; mask_share is the mixture's."""
    if name not in PROCESSES:
        raise RedraftError(f"process {name!r}: expected one of {list(PROCESSES)}")
    sched = make_schedule(schedule, schedule_eps)
    if name == "mask":
        return MaskProcess(mask_id, sched, vocab_size)
    if vocab_size is None:
        raise RedraftError(f"process {name!r} needs the vocabulary size (vocab_size=...)")
    if name == "mixture":
        return MixtureProcess(vocab_size, mask_id, sched, mask_share)
    return PROCESSES[name](vocab_size, mask_id, sched)

# (logits (B, L, V), x0 (B, L), xt (B, L), t (B,), process) -> per-token nats (B, L), a bound
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Process], torch.Tensor]


def _mdlm_loss(logits, x0, xt, t, process: Process) -> torch.Tensor:
    return masked_elbo(logits, x0, xt, t, process.schedule, process.mask_id)


@dataclass(frozen=True)
class Objective:
    name: str
    summary: str
    parameterisation: str
    """"next-token" (causal LM), "subs" (MDLM's zero-masking denoiser), "mean" (a denoiser
    over every id, UDLM / Duo) or "score" (the log concrete score, SEDD)."""
    attention: str
    """"causal", "bidirectional" or "block" (bidirectional inside blocks of
    diffusion.block_size, causal across them: BD3-LM)."""
    processes: tuple[str, ...]
    """The noise processes it is defined for (none for the causal twin)."""
    bound: str
    """What the loss it reports is."""
    default_sampler: str | None
    """The sampler (sampling.registry) a user gets without asking (None: left to right)."""
    loss: Loss | None = None
    """The per-token bound (None for the causal twin, scored by ar_cross_entropy)."""
    count_estimator: bool = False
    """Whether the masked ELBO's mask-count estimator and token weighting apply."""
    prompt_conditioning: bool = False
    """Whether prompt-conditioned training (condition dropout) applies."""
    hybrid: bool = False
    """AR and block diffusion in one causal backbone (TiDAR, Nemotron-Labs-Diffusion): the
    clean stream is an exact causal LM; draft blocks of diffusion.block_size, bidirectional
    inside, see the clean tokens before them (losses.hybrid_token_losses, decoders/hybrid.py)."""

    @property
    def autoregressive(self) -> bool:
        return self.parameterisation == "next-token"

    @property
    def denoiser(self) -> bool:
        """Logits are a distribution over the clean token (samplers may draw from them)."""
        return self.parameterisation in ("subs", "mean")

    @property
    def masked_denoiser(self) -> bool:
        """MDLM's absorbing-only denoiser: what the masked-model samplers need."""
        return self.parameterisation == "subs"

    @property
    def causal(self) -> bool:
        return self.attention == "causal"

    @property
    def blockwise(self) -> bool:
        """Block diffusion: its loss (losses.block_token_losses) and sampler
        (sampling/block.py) work block by block over a block-causal backbone."""
        return self.attention == "block"


OBJECTIVES: dict[str, Objective] = {
    "ar": Objective("ar", "the autoregressive twin: next-token cross-entropy", "next-token",
                    "causal", (), "exact NLL", None),
    "mdlm": Objective("mdlm", "masked diffusion: continuous-time ELBO, SUBS denoiser", "subs",
                      "bidirectional", ("mask",), "NLL upper bound (ELBO)", "ancestral",
                      _mdlm_loss, count_estimator=True, prompt_conditioning=True),
    "udlm": Objective("udlm", "mean-parameterised continuous-time ELBO (UDLM / Duo)", "mean",
                      "bidirectional", ("mask", "uniform", "mixture"),
                      "NLL upper bound (ELBO)", "ancestral", uniform_elbo),
    "sedd": Objective("sedd", "score entropy: the network outputs the log concrete score",
                      "score", "bidirectional", ("mask", "uniform", "mixture"),
                      "NLL upper bound (score entropy)", "analytic", sedd_loss),
    # The loss needs the clean blocks beside the noised ones in one pass: losses.py
    # (block_token_losses) runs it; the maths is in diffusion/block.py.
    "block": Objective("block", "block diffusion (BD3-LM): masked diffusion inside blocks, "
                       "autoregressive across them, exact KV cache", "subs", "block", ("mask",),
                       "NLL upper bound (block ELBO)", "ancestral", count_estimator=True),
    # One pass over the clean sequence (causal, next-token loss) and draft blocks beside it
    # (masked diffusion, the drafts' loss weighted by diffusion.hybrid_draft_weight).
    "hybrid": Objective("hybrid", "hybrid AR + block diffusion: an exact causal LM whose "
                        "draft blocks decode by diffusion and self-speculation", "next-token",
                        "causal", ("mask",), "exact NLL (AR mode)", None, count_estimator=True,
                        hybrid=True),
}


def objective(name: str) -> Objective:
    """The entry of objective `name`; a RedraftError lists the known ones."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        raise RedraftError(f"objective {name!r}: expected one of {list(OBJECTIVES)}")
    return OBJECTIVES[name]
