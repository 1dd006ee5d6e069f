"""Samplers (one algorithm a file) and the loops that drive them (generate.py)."""

from redraft.sampling.categorical import RowRandom, probabilities, sample
from redraft.sampling.generate import Generation, generate_ar, generate_diffusion
from redraft.sampling.masked import MaskedAncestral
from redraft.sampling.registry import DEFAULT_SAMPLER, SAMPLERS, make_sampler
from redraft.sampling.state import DiffusionState, next_tokens

__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "DiffusionState",
    "make_sampler",
    "Generation",
    "MaskedAncestral",
    "RowRandom",
    "generate_ar",
    "generate_diffusion",
    "next_tokens",
    "probabilities",
    "sample",
]
