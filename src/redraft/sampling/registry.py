"""Sampler names -> step rules, and the default for each objective.

"ancestral": denoiser models (mdlm, udlm): reveal / resample from p_theta(x0 | xt) through the
             forward posterior; temperature, top-k and top-p reshape the denoiser.
"analytic":  SEDD's Tweedie tau-leaping step from the concrete score (any objective; for
             denoiser models it is the same computation as ancestral).
"euler":     first-order step over the reverse rates (any objective).

All draw in float64 through sampling/categorical.py with one counter-based stream per row.
"""

from __future__ import annotations

from redraft.diffusion import Process
from redraft.errors import RedraftError
from redraft.sampling.analytic import Analytic
from redraft.sampling.ancestral import Ancestral
from redraft.sampling.euler import Euler
from redraft.sampling.masked import MaskedAncestral

SAMPLERS = {
    "ancestral": "reverse posterior with the denoiser plugged in (mdlm, udlm)",
    "analytic": "Tweedie tau-leaping from the concrete score (any objective)",
    "euler": "first-order step over the learned reverse rates (any objective)",
}
DEFAULT_SAMPLER = {"mdlm": "ancestral", "udlm": "ancestral", "sedd": "analytic"}
MEAN_PARAMETERISED = ("mdlm", "udlm")


def make_sampler(name: str | None, process: Process, objective: str, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None):
    """The step rule `name` (None: the objective's default) for a model trained with
    `objective` on `process`; the result has step(logits, xt, t, s, rng) -> xs."""
    if objective not in DEFAULT_SAMPLER:
        raise RedraftError(f"objective {objective!r} has no diffusion sampler: expected one of "
                           f"{list(DEFAULT_SAMPLER)}")
    name = name or DEFAULT_SAMPLER[objective]
    if name not in SAMPLERS:
        raise RedraftError(f"unknown sampler {name!r}: expected one of {list(SAMPLERS)}")
    if objective == "mdlm" and process.name != "mask":
        raise RedraftError(f"objective 'mdlm' needs the mask process, got {process.name!r}")
    knobs = temperature != 1.0 or top_k is not None or top_p is not None
    if name == "ancestral" or (name == "analytic" and objective in MEAN_PARAMETERISED):
        if objective not in MEAN_PARAMETERISED:
            raise RedraftError(f"sampler {name!r} needs a denoiser (objective mdlm or udlm); a "
                               f"{objective!r} model outputs scores: use 'analytic' or 'euler'")
        if process.name == "mask":  # the same step, restricted to the masked positions
            return MaskedAncestral(process, temperature, top_k, top_p)
        return Ancestral(process, temperature, top_k, top_p)
    if knobs:
        raise RedraftError(f"sampler {name!r} on a {objective!r} model draws from rates, which "
                           "temperature / top-k / top-p do not apply to: leave them at 1 / none "
                           "or use a denoiser model with sampler 'ancestral'")
    return (Analytic if name == "analytic" else Euler)(process, objective)
