"""Tiny random-weight checkpoints of the three attention kinds, saved as redraft writes them,
and a session-wide folder for the code transformers copies out of trust_remote_code folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from redraft.checkpoint import build_model, save_checkpoint
from redraft.config import Config
from redraft.data.tokenizers import ByteTokenizer, CharTokenizer

CHARS = sorted(set("the cat sat on a mat.\n"))
# kind -> (objective, tokenizer, extra settings): a byte AR twin, a time-conditioned masked
# model and a block model whose blocks (8) are shorter than its context (32).
KINDS = {"ar": ("ar", "byte", {}), "mdlm": ("mdlm", "char", {"time_conditioning": True}),
         "block": ("block", "char", {})}


@pytest.fixture(scope="session")
def remote_code_cache(tmp_path_factory) -> Path:
    """transformers copies a trust_remote_code folder's .py files into HF_MODULES_CACHE and
    imports them from there as `transformers_modules`: point it at a temporary folder once for
    the session (the package, once imported, keeps its first location), never at ~/.cache."""
    import transformers.dynamic_module_utils as dmu
    from transformers import utils

    if dmu.HF_MODULES_CACHE == utils.HF_MODULES_CACHE:  # not already moved by another test module
        dmu.HF_MODULES_CACHE = str(tmp_path_factory.mktemp("hf-modules"))
    return Path(dmu.HF_MODULES_CACHE)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """kind -> a checkpoint folder of a seeded random model (2 layers, d 32, context 32)."""
    base = tmp_path_factory.mktemp("export-ckpts")
    out = {}
    for i, (kind, (objective, tok_kind, extra)) in enumerate(KINDS.items()):
        cfg = Config()
        cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model = 2, 2, 32
        cfg.model.seq_len = 32
        cfg.model.time_conditioning = extra.get("time_conditioning", False)
        cfg.diffusion.objective = objective
        cfg.diffusion.block_size = 8
        tok = ByteTokenizer() if tok_kind == "byte" else CharTokenizer(CHARS)
        torch.manual_seed(i)
        model = build_model(cfg, tok.vocab_size).eval()
        out[kind] = save_checkpoint(base / kind, 1, cfg, model, tok)
    return out
