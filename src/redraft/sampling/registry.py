"""Sampler names -> step rules and their knobs (each objective's default sampler is in its
entry, diffusion.registry).

    name           models             knobs
    ancestral      mdlm, udlm         -
    analytic       any                -
    euler          any                -
    first_hitting  mdlm               -
    confidence     mdlm               measure (confidence | margin | entropy)
    threshold      mdlm               threshold (0 < x <= 1), measure (confidence | margin)
    remask         mdlm               eta (>= 0), schedule (cap | rescale)
    entropy_bound  DiffusionGemma     entropy_bound, t_min, t_max, stability_threshold,
                   (hf:...)           confidence_threshold, measure (entropy_bound |
                                      confidence | margin | entropy)

DiffusionGemma (redraft.hf) takes entropy_bound (its own rule, the default) and confidence
(the same loop accepting the k surest positions per step, sampling/entropy_bound.py); the
masked samplers need a mask state it does not have. Masked Hugging Face models (LLaDA, Dream)
take every masked sampler; their reference rules are: LLaDA low-confidence remasking =
confidence (measure confidence) with block_size for its semi-AR blocks; Dream maskgit_plus =
confidence (measure confidence), topk_margin = confidence (measure margin), entropy =
confidence (measure entropy); Fast-dLLM's parallel decoding = threshold.

Knobs are validated here (unknown names and bad values raise RedraftError); the CLI passes them
as `--sampler-opt name=value`, the server as `sampler_options`, Python as `options={...}`.
Loop-level settings (steps, block_size, eos stop, guidance) belong to the loop
(generate_diffusion, DiffusionState), not to a rule, and work with any of them.

Temperature (and top-k / top-p) is not one thing in discrete diffusion; here it means:
- ancestral, first_hitting, remask: it reshapes the denoiser p_theta(x0 | xt) from which each
  revealed token is drawn (logits / T; T = 0 takes its argmax). Which positions are revealed
  and when follows the schedule (or the exact hitting times) and does not depend on T.
- confidence, threshold: it reshapes the distribution the candidate tokens are drawn from;
  which candidates are committed is ranked by the model's own distribution at T = 1.
- analytic, euler (score models): not defined: they draw from rates, which T does not scale;
  setting it is an error. For denoiser models "analytic" is the ancestral step (same maths) and
  takes T with the ancestral meaning.
All draws are float64 inverse-CDF through sampling/categorical.py, one stream per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch

from redraft.diffusion import Objective, Process, objective
from redraft.errors import RedraftError
from redraft.sampling.analytic import Analytic
from redraft.sampling.ancestral import Ancestral
from redraft.sampling.categorical import RowRandom
from redraft.sampling.confidence import MEASURES, Confidence, Threshold
from redraft.sampling.entropy_bound import MEASURES as EB_MEASURES
from redraft.sampling.entropy_bound import EntropyBound
from redraft.sampling.euler import Euler
from redraft.sampling.first_hitting import FirstHitting
from redraft.sampling.masked import MaskedAncestral
from redraft.sampling.remask import SCHEDULES, Remask


@runtime_checkable
class StepRule(Protocol):
    """A reverse step on the time grid: step(logits, xt, t, s, rng, free) -> xs.

    logits (B, L, V) of the backbone at (xt, t); xt (B, L); times 1 >= t > s >= 0; rng the rows'
    random streams; free (B, L) bool, the positions the step may change (None: all). Returns
    xs (B, L). A rule never owns the model: the loop (sampling/state.py) calls the network."""

    name: ClassVar[str]

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float, s: float, rng: RowRandom,
             free: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class AdaptiveStepRule(Protocol):
    """A rule that chooses its own times: step(logits, xt, t, rng, free) -> (xs, s), with t and
    s per row (B,) float64; `adaptive = True` tells the loop which protocol a rule follows."""

    name: ClassVar[str]
    adaptive: ClassVar[bool]

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, rng: RowRandom,
             free: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Knob:
    """One sampler option: its type, default and allowed values."""

    kind: type
    default: object
    help: str
    choices: tuple = ()
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive
    low_open: bool = False

    def check(self, sampler: str, name: str, value: object) -> object:
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or isinstance(value, bool):
            raise RedraftError(f"sampler {sampler!r} option {name}={value!r}: expected "
                               f"{self.kind.__name__} ({self.help})")
        if isinstance(value, float) and not math.isfinite(value):
            raise RedraftError(f"sampler {sampler!r} option {name}={value!r}: expected a finite "
                               f"number ({self.help})")
        if self.choices and value not in self.choices:
            raise RedraftError(f"sampler {sampler!r} option {name}={value!r}: expected one of "
                               f"{list(self.choices)}")
        too_low = self.low is not None and (value <= self.low if self.low_open
                                            else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            lo = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
            hi = "" if self.high is None else f" <= {self.high}"
            raise RedraftError(f"sampler {sampler!r} option {name}={value!r}: expected "
                               f"{lo}{name}{hi}")
        return value


@dataclass(frozen=True)
class SamplerInfo:
    summary: str
    models: str  # "denoiser" (mdlm, udlm), "masked" (mdlm), "any"
    knobs: dict[str, Knob] = field(default_factory=dict)
    rule: type | None = None  # the step rule class of the masked-only samplers

    @property
    def adaptive(self) -> bool:
        """Whether the rule chooses its own number of steps (network calls)."""
        return bool(getattr(self.rule, "adaptive", False))


SAMPLERS: dict[str, SamplerInfo] = {
    "ancestral": SamplerInfo("reverse posterior with the denoiser plugged in",
                             "denoiser"),
    "analytic": SamplerInfo("Tweedie tau-leaping from the concrete score",
                            "any"),
    "euler": SamplerInfo("first-order step over the learned reverse rates",
                         "any"),
    "first_hitting": SamplerInfo("exact: one reveal per call at drawn hitting times",
                                 "masked", rule=FirstHitting),
    "confidence": SamplerInfo(
        "commit the k surest masked positions per step, k from the schedule", "masked",
        {"measure": Knob(str, "confidence", "how sureness is scored", MEASURES)}, Confidence),
    "threshold": SamplerInfo(
        "commit every masked position surer than a threshold, at least one", "masked",
        {"threshold": Knob(float, 0.9, "score a candidate must exceed", low=0.0, high=1.0,
                           low_open=True),
         "measure": Knob(str, "confidence", "how sureness is scored", ("confidence", "margin"))},
        Threshold),
    "remask": SamplerInfo(
        "ReMDM: revealed tokens may be re-masked, extra steps buy quality", "masked",
        {"eta": Knob(float, 0.04, "re-mask strength", low=0.0),
         "schedule": Knob(str, "cap", "how eta sets the re-mask probability", SCHEDULES)},
        Remask),
    "entropy_bound": SamplerInfo(
        "DiffusionGemma: keep draws under an entropy bound, re-noise the rest", "diffusion_gemma",
        {"entropy_bound": Knob(float, 0.1, "joint-dependence budget; larger accepts more",
                               low=0.0, low_open=True),
         "t_min": Knob(float, 0.4, "temperature of the last step", low=0.0, low_open=True),
         "t_max": Knob(float, 0.8, "temperature of the first step", low=0.0, low_open=True),
         "stability_threshold": Knob(int, 1, "steps the draft must stay unchanged to stop",
                                     low=0),
         "confidence_threshold": Knob(float, 0.005, "mean entropy below which a row may stop",
                                      low=0.0, low_open=True),
         "measure": Knob(str, "entropy_bound", "acceptance rule", EB_MEASURES)},
        EntropyBound),
}


def takes_temperature(name: str, trained_with: str | Objective) -> bool:
    """Whether temperature / top-k / top-p mean something for sampler `name` on a model
    trained with objective `trained_with`: not for the rate-based steps of score models."""
    return name not in ("analytic", "euler") or (name == "analytic"
                                                 and objective(trained_with).denoiser)


def sampler_options(name: str, options: dict | None) -> dict:
    """The options of sampler `name` with defaults filled in; clear errors for unknown names
    and bad values."""
    if name not in SAMPLERS:
        raise RedraftError(f"unknown sampler {name!r}: expected one of {list(SAMPLERS)}")
    knobs = SAMPLERS[name].knobs
    options = dict(options or {})
    unknown = sorted(set(options) - set(knobs))
    if unknown:
        have = f"its options are {sorted(knobs)}" if knobs else "it has no options"
        raise RedraftError(f"sampler {name!r} has no option {unknown[0]!r}: {have}")
    out = {k: knob.default for k, knob in knobs.items()}
    out.update({k: knobs[k].check(name, k, v) for k, v in options.items()})
    if name == "remask" and out["schedule"] == "rescale" and out["eta"] > 1:
        raise RedraftError(f"sampler 'remask' option eta={out['eta']!r}: the rescale schedule "
                           "needs 0 <= eta <= 1")
    return out


def parse_options(name: str, pairs: list[str] | None) -> dict:
    """`name=value` strings (the CLI's --sampler-opt) -> typed options of sampler `name`."""
    if name not in SAMPLERS:
        raise RedraftError(f"unknown sampler {name!r}: expected one of {list(SAMPLERS)}")
    knobs, out = SAMPLERS[name].knobs, {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise RedraftError(f"sampler option {pair!r}: expected name=value")
        if key not in knobs:
            sampler_options(name, {key: raw})  # raises the unknown-option error
        kind = knobs[key].kind
        try:
            out[key] = kind(raw)
        except ValueError:
            raise RedraftError(f"sampler {name!r} option {key}={raw!r}: expected "
                               f"{kind.__name__}") from None
    return sampler_options(name, out)


def make_sampler(name: str | None, process: Process, trained_with: str | Objective,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 options: dict | None = None) -> StepRule | AdaptiveStepRule:
    """The step rule `name` (None: the objective's default) for a model trained with objective
    `trained_with` (a name or a diffusion.registry entry) on `process`, with its `options`
    (see SAMPLERS)."""
    obj = objective(trained_with)
    if obj.default_sampler is None:
        raise RedraftError(f"objective {obj.name!r} has no diffusion sampler: it samples left "
                           "to right")
    name = name or obj.default_sampler
    opts = sampler_options(name, options)
    if process.name not in obj.processes:
        raise RedraftError(f"objective {obj.name!r} needs one of the processes "
                           f"{list(obj.processes)}, got {process.name!r}")
    needs = SAMPLERS[name].models
    if needs == "diffusion_gemma":
        raise RedraftError(f"sampler {name!r} needs a DiffusionGemma model (redraft.load('hf:...'))"
                           f", got a {obj.name!r} model")
    if needs == "masked":
        if not obj.masked_denoiser:
            raise RedraftError(f"sampler {name!r} needs a masked denoiser (objective mdlm), got "
                               f"a {obj.name!r} model on the {process.name!r} process")
        return SAMPLERS[name].rule(process, temperature, top_k, top_p, **opts)
    if name == "ancestral" or (name == "analytic" and obj.denoiser):
        if not obj.denoiser:
            raise RedraftError(f"sampler {name!r} needs a denoiser (objective mdlm or udlm); a "
                               f"{obj.name!r} model outputs scores: use 'analytic' or 'euler'")
        if process.name == "mask":  # the same step, restricted to the masked positions
            return MaskedAncestral(process, temperature, top_k, top_p)
        return Ancestral(process, temperature, top_k, top_p)
    if not takes_temperature(name, obj) and (temperature != 1.0 or top_k is not None
                                             or top_p is not None):
        raise RedraftError(f"sampler {name!r} on a {obj.name!r} model draws from rates, which "
                           "temperature / top-k / top-p do not apply to: leave them at 1 / none "
                           "or use a denoiser model with sampler 'ancestral'")
    return (Analytic if name == "analytic" else Euler)(process, obj)
