"""One decoder per kind of model, behind one step-state protocol (decoders/base.py).

    kind        module        what
    ar          ar.py         a causal redraft backbone (the AR twin): KV cache, ragged rows
    canvas      canvas.py     full-canvas diffusion (masked / uniform / mixture; HF masked)
    block       block.py      block diffusion: blocks left to right over an exact KV cache
    gemma       gemma.py      transformers' DiffusionGemma
    hf_causal   hf_causal.py  a Hugging Face causal LM (its own cache, lockstep cohorts)
    hybrid      hybrid.py     a hybrid AR + block diffusion backbone: ar or self-speculative
    (pairs)     speculative.py  a drafter model with a causal verifier (redraft.speculative)

`redraft.load` picks one per model (redraft checkpoints by their objective's table entry,
Hugging Face models by their kind); `Model.generate` (run.py) and the server's engine drive
it. Adding a kind is a module here plus a line in DECODERS.
"""

from __future__ import annotations

from redraft.decoders.ar import ARDecoder
from redraft.decoders.base import Decoder, Lane
from redraft.decoders.block import BlockDecoder
from redraft.decoders.canvas import CanvasDecoder
from redraft.decoders.gemma import GemmaDecoder
from redraft.decoders.hf_causal import HFCausalDecoder
from redraft.decoders.hybrid import HybridDecoder
from redraft.decoders.jobs import Event, Job, Work
from redraft.errors import RedraftError

DECODERS: dict[str, type[Decoder]] = {
    "ar": ARDecoder,
    "canvas": CanvasDecoder,
    "block": BlockDecoder,
    "gemma": GemmaDecoder,
    "hf_causal": HFCausalDecoder,
    "hybrid": HybridDecoder,
}


def for_objective(objective) -> str:
    """The decoder of a redraft checkpoint, from its objective's table entry."""
    if objective.hybrid:
        return "hybrid"
    if objective.autoregressive:
        return "ar"
    return "block" if objective.blockwise else "canvas"


def make_decoder(kind: str, model) -> Decoder:
    if kind not in DECODERS:
        raise RedraftError(f"decoder {kind!r}: expected one of {list(DECODERS)}")
    return DECODERS[kind](model)


__all__ = ["DECODERS", "Decoder", "Event", "Job", "Lane", "Work", "for_objective",
           "make_decoder"]
