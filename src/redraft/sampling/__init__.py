"""Samplers (one algorithm a file) and the loops that drive them (generate.py)."""

from redraft.sampling.categorical import RowRandom, probabilities, sample
from redraft.sampling.generate import Generation, generate_ar, generate_diffusion
from redraft.sampling.masked import MaskedAncestral

__all__ = [
    "Generation",
    "MaskedAncestral",
    "RowRandom",
    "generate_ar",
    "generate_diffusion",
    "probabilities",
    "sample",
]
