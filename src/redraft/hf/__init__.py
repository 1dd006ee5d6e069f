"""Hugging Face models through redraft: `redraft.load("hf:<folder or hub id>[?key=value&...]")`.

Three kinds, told apart by the config (or `kind=`):

    kind       what                                         how redraft drives it
    gemma      transformers' diffusion_gemma                hf/gemma.py: prompt cache, canvases,
                                                            entropy-bound rule (GemmaModel)
    masked     input_ids -> logits with a mask id           redraft's masked samplers (mdlm,
               (LLaDA, Dream, ...; usually remote code)     mask process) over MaskedBackbone
    causal     AutoModelForCausalLM                         the AR loop with the model's cache

Options after `?` (also keyword arguments of redraft.load):
    kind=gemma|masked|causal   override the detection (model_type diffusion_gemma -> gemma;
                               auto_map / remote code -> masked; else causal)
    trust_remote_code=1        run the modelling code shipped with the model (needed for
                               LLaDA / Dream style models; off unless asked, it executes code)
    mask_id=N                  the mask token (default: config.mask_token_id, then the
                               tokenizer's mask token)
    shift=1|0                  Dream's logit shift (default on for model_type "Dream")
    seq_len=N                  the longest canvas (default: config.max_position_embeddings)
    revision=REV               a hub revision
    device=DEV                 where to put it (cpu, cuda, cuda:1; overrides the device
                               argument: the CLI's commands take it from the spec)
A folder `redraft export` wrote is read natively (redraft.export.read_exported_spec), never
through transformers: only device= applies to it, the other options are refused.
Loading never downloads unless the folder is not local and the network allows it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from redraft.errors import RedraftError
from redraft.request import HF_NEW_TOKENS

KINDS = ("gemma", "masked", "causal")
DEFAULT_NEW_TOKENS = HF_NEW_TOKENS
"""Tokens a Hugging Face model generates when no length is asked (redraft sample, generate,
the server's max_tokens): their contexts run to 131,072 tokens, so "the rest of the context"
would be hours of work; transformers and OpenAI default to a short completion the same way."""


_OPTIONS = ("kind", "trust_remote_code", "mask_id", "shift", "seq_len", "revision", "device")


def _flag(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise RedraftError(f"hf option {key}={value!r}: expected 1/0 or true/false")


def parse_spec(spec: str) -> tuple[str, dict]:
    """'hf:path?k=v&k=v' -> (path, options)."""
    body = spec[3:] if spec.startswith("hf:") else spec
    path, _, query = body.partition("?")
    if not path:
        raise RedraftError(f"{spec!r}: expected hf:<folder or hub id>")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return path, opts


def check_options(opts: dict) -> dict:
    """The options of an hf: spec, checked and typed (flags to bool, ids to int)."""
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise RedraftError(f"hf option {unknown[0]!r}: expected one of {list(_OPTIONS)}")
    out = dict(opts)
    if "kind" in out and out["kind"] not in KINDS:
        raise RedraftError(f"hf option kind={out['kind']!r}: expected one of {list(KINDS)}")
    for key in ("trust_remote_code", "shift"):
        if key in out:
            out[key] = _flag(key, out[key])
    for key in ("mask_id", "seq_len"):
        if key in out:
            try:
                out[key] = int(out[key])
            except (TypeError, ValueError):
                raise RedraftError(f"hf option {key}={out[key]!r}: expected an integer") from None
            if out[key] < (0 if key == "mask_id" else 1):
                raise RedraftError(f"hf option {key}={out[key]}: out of range")
    return out


def load_hf(spec: str, base: type, device="cpu", name: str | None = None, **options):
    """A redraft.Model for a Hugging Face folder or hub id (see the module docstring). base:
    redraft.model.Model (redraft.load passes it: this package does not import redraft.model,
    which imports it)."""
    from redraft.hf.loaders import load_causal, load_gemma, load_masked, read_config

    path, opts = parse_spec(str(spec))
    opts = check_options({**opts, **options})
    trust = opts.get("trust_remote_code", False)
    config = read_config(path, trust, opts.get("revision"))
    kind = opts.get("kind")
    if kind is None:
        if getattr(config, "model_type", None) == "diffusion_gemma":
            kind = "gemma"
        elif getattr(config, "auto_map", None):
            kind = "masked"
        else:
            kind = "causal"
    name = name or Path(path.rstrip("/")).name or path
    load = {"gemma": load_gemma, "masked": load_masked, "causal": load_causal}[kind]
    return load(path, config, opts, opts.get("device", device), name, base)
