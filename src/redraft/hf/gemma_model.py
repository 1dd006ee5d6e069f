"""GemmaModel: a DiffusionGemma as a redraft.Model.

Mixed into redraft.model.Model by load_hf, it is a Model like any other for its callers: its
decoder (redraft.decoders.gemma) gives `generate` and the server's engine the same rows
(hf/gemma.py: GemmaRows), batched at step level.
What it does not have: a likelihood bound (DiffusionGemma is trained without one redraft can
compute), infilling (its canvas always follows the prompt's cache), guidance, and blocks other
than its canvas.
"""

from __future__ import annotations

import torch

from redraft.decoders.gemma import GemmaDecoder
from redraft.diffusion import make_process
from redraft.diffusion.registry import Objective
from redraft.errors import RedraftError
from redraft.scoring import NoScore

GEMMA = Objective("diffusion_gemma", "DiffusionGemma: encoder prompt cache, self-conditioned "
                  "decoder over a uniform-noise canvas", "self-conditioned denoiser",
                  "bidirectional", ("uniform",), "none (no likelihood bound)", "entropy_bound")


class GemmaBackbone:
    """The facts the rest of redraft reads (vocab, context, device); the network itself is
    driven by hf/gemma.py, not through __call__."""

    causal = False
    time_conditioned = False

    def __init__(self, hf):
        self.hf = hf
        self.vocab_size = hf.config.text_config.vocab_size

    @property
    def seq_len(self) -> int:
        return int(self.hf.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return self.hf.device

    def __call__(self, *args, **kwargs):
        raise RedraftError("DiffusionGemma's decoder needs its prompt cache and "
                           "self-conditioning: drive it through redraft.hf.gemma")


class GemmaModel:
    """The DiffusionGemma side of a redraft.Model: load_hf mixes it into redraft.model.Model
    (passed in, since redraft.model imports this package and it cannot import that back), so
    the result is a Model whose sample / start / infill / nll / evaluate / chat_prompt are
    these."""

    def __init__(self, hf, tokenizer, *, name: str, path=None, meta: dict | None = None):
        # Model.__init__ checks redraft's own objective table; DiffusionGemma's entry is its
        # own, so it is not called.
        self.backbone, self.tokenizer, self.objective = GemmaBackbone(hf), tokenizer, GEMMA
        self.process = make_process("uniform", mask_id=tokenizer.mask_id,
                                    vocab_size=self.backbone.vocab_size)
        self.hf, self.name, self.config, self.path = hf, name, None, path
        self.meta = meta or {}
        self.canvas_length = int(hf.config.canvas_length)
        gc = hf.generation_config
        defaults = {"entropy_bound": 0.1, "t_min": 0.4, "t_max": 0.8,
                    "stability_threshold": 1, "confidence_threshold": 0.005}
        sc = getattr(gc, "sampler_config", None)
        if sc is not None:
            defaults["entropy_bound"] = float(getattr(sc, "entropy_bound", None)
                                              or sc.get("entropy_bound"))
        for key in ("t_min", "t_max", "stability_threshold", "confidence_threshold"):
            if getattr(gc, key, None) is not None:
                defaults[key] = getattr(gc, key)
        self.rule_defaults = defaults
        self.default_steps = getattr(gc, "max_denoising_steps", None) or 48
        self.decoder = GemmaDecoder(self)  # redraft.decoders.gemma: rows, rule, lane
        self.scorer = NoScore(self)

    def infill(self, template, **knobs):
        raise RedraftError("DiffusionGemma cannot infill: each canvas follows the prompt's "
                           "cache, so text after a span cannot be held fixed")

    def nll(self, texts, **kw):
        raise RedraftError("DiffusionGemma has no likelihood bound redraft can compute")

    def evaluate(self, *args, **kw):
        raise RedraftError("DiffusionGemma has no likelihood bound redraft can compute: "
                           "`redraft eval` needs a masked-diffusion or causal model; use "
                           "`redraft bench` for its samples' quality and speed")

    def chat_prompt(self, messages) -> str:
        return self.tokenizer.chat(messages)
