"""DiffusionGemma (transformers' diffusion_gemma): canvases after an encoder's prompt cache,
the entropy-bound rule (hf/gemma.py holds the model-facing steps).

Its lane puts every request of the model in one decoder call per tick, whatever their
lengths (hf/gemma.py: decode_step stacks their caches, left-padded to a common length with
the pad slots masked); each request's own rule advances its own rows.
"""

from __future__ import annotations

from redraft.decoders.base import Decoder, Lane, Stepped
from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.hf.gemma import GemmaRows, decode_step
from redraft.sampling.categorical import check_knobs
from redraft.sampling.entropy_bound import EntropyBound
from redraft.sampling.registry import sampler_options

SAMPLERS = ("entropy_bound", "confidence")


class GemmaLane(Lane):
    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        live = [job.state for job in jobs if not job.state.done]
        rows = decode_step(self.decoder.model.backbone.hf, live) if live else 0
        for job in jobs:
            job.row_nfe = job.state.row_nfe
            stepped(job, job.state.i)
        return [rows]


class GemmaDecoder(Decoder):
    name = "gemma"
    lane_class = GemmaLane
    infills = False  # each canvas follows the prompt's cache
    adaptive_steps = True  # a canvas stops early once stable and confident

    def __init__(self, model):
        super().__init__(model)
        hf = model.backbone.hf
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
        self.rule_defaults = defaults  # the model's generation config
        self.default_steps = getattr(gc, "max_denoising_steps", None) or 48

    def check_infill(self) -> None:
        raise RedraftError("DiffusionGemma cannot infill: each canvas follows the prompt's "
                           "cache, so text after a span cannot be held fixed")

    def samplers(self) -> list[str]:
        return list(SAMPLERS)

    def default_sampler(self) -> str:
        return "entropy_bound"

    def rule(self, name, temperature=1.0, top_k=None, top_p=None, options=None,
             steps: int | None = None) -> EntropyBound:
        """The step rule for these knobs: the model's generation-config defaults, then
        `options` (sampler 'confidence' is the same loop with measure confidence)."""
        name = name or "entropy_bound"
        if name not in SAMPLERS:
            raise RedraftError(f"sampler {name!r} does not apply to DiffusionGemma (no mask "
                               f"state): expected one of {list(SAMPLERS)}")
        if top_k is not None or top_p is not None:
            raise RedraftError("top_k / top_p are not defined for the entropy-bound rule: use "
                               "temperature, t_min, t_max")
        options = dict(options or {})
        if name == "confidence":
            options = {"measure": options.pop("measure", "confidence"), **options}
            if options["measure"] not in ("confidence", "margin", "entropy"):
                raise RedraftError(f"sampler 'confidence' option measure={options['measure']!r}"
                                   ": expected one of ['confidence', 'margin', 'entropy']")
        opts = sampler_options("entropy_bound", {**self.rule_defaults, **options})
        steps = self.default_steps if steps is None else steps
        if not isinstance(steps, int) or steps < 1:
            raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
        if opts["t_max"] < opts["t_min"]:
            raise RedraftError(f"t_max={opts['t_max']} < t_min={opts['t_min']}: the schedule "
                               "runs from t_max (first step) down to t_min (last)")
        return EntropyBound(steps=steps, temperature=temperature, **opts)

    def start(self, work: Work, noise=None, **extra) -> GemmaRows:
        """One request's rows (encoded at its first tick). noise: a replacement random source
        for all rows (tests replay transformers' draws)."""
        m, r = self.model, work.request
        if r.logprobs is not None:
            raise RedraftError("logprobs: DiffusionGemma does not record log-probabilities yet")
        check_knobs(r.temperature, r.top_k, r.top_p)
        if work.suffix or work.canvas is not None:
            raise RedraftError("DiffusionGemma writes each canvas after the prompt's cache: it "
                               "cannot hold a suffix or fill a template")
        if r.guidance:
            raise RedraftError("guidance is not defined for DiffusionGemma")
        if r.early_commit is not None:
            raise RedraftError("early_commit needs a mask state, which DiffusionGemma does not "
                               "have: its entropy bound already accepts sure positions at once")
        if r.block_size is not None and r.block_size != self.canvas_length:
            raise RedraftError(f"block_size={r.block_size}: DiffusionGemma decodes canvases of "
                               f"{self.canvas_length} tokens (its config's canvas_length)")
        rule = self.rule(r.sampler, r.temperature, r.top_k, r.top_p, r.options, r.steps)
        self.check_fit(work)
        tok = m.tokenizer
        return GemmaRows(m.backbone.hf, rule, work.prefix, work.length, work.seeds,
                         bos_id=tok.bos_id, eos_id=tok.eos_id if r.stop_at_eos else None,
                         placeholder=tok.mask_id, noise=noise)
