"""Samplers (one algorithm a file) and the loops that drive them (generate.py)."""

from redraft.sampling.block import BlockState, generate_block, start_block
from redraft.sampling.categorical import RowRandom, next_tokens, probabilities, sample
from redraft.sampling.generate import Generation, generate_ar, generate_diffusion
from redraft.sampling.infill import Infill, Span, infill, parse_template
from redraft.sampling.masked import MaskedAncestral
from redraft.sampling.registry import (
    SAMPLERS,
    AdaptiveStepRule,
    StepRule,
    make_sampler,
    parse_options,
    sampler_options,
)
from redraft.sampling.state import DiffusionState

__all__ = [
    "AdaptiveStepRule",
    "BlockState",
    "SAMPLERS",
    "DiffusionState",
    "Generation",
    "Infill",
    "MaskedAncestral",
    "RowRandom",
    "Span",
    "StepRule",
    "generate_ar",
    "generate_block",
    "generate_diffusion",
    "infill",
    "make_sampler",
    "next_tokens",
    "parse_options",
    "parse_template",
    "probabilities",
    "sample",
    "sampler_options",
    "start_block",
]
