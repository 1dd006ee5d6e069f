"""Shared pieces of the constraint tests: a tiny vocabulary with multi-character tokens,
random regexes over it, and tiny random-weight models of each decodable kind."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import torch

TEXT = ["a", "b", "c", "ab", "ba", "bc"]  # tokens that span several automaton steps


def toy_tokenizer():
    """ids 0..5 the TEXT tokens, eos 6, pad 7, mask 8 (a char-kind tokenizer's interface)."""
    return SimpleNamespace(kind="char", chars=TEXT, eos_id=6, pad_id=7, mask_id=8,
                           vocab_size=9)


def random_regex(rng: random.Random, depth: int = 0) -> str:
    """A random regular expression over {a, b, c} (Python syntax, interegular's subset)."""
    atoms = ["a", "b", "c", "[ab]", "[^a]", "(ab|c)", "."]
    if depth > 2 or rng.random() < 0.3:
        return rng.choice(atoms)
    kind = rng.random()
    if kind < 0.4:
        return "".join(random_regex(rng, depth + 1) for _ in range(rng.randint(2, 3)))
    if kind < 0.6:
        return f"({random_regex(rng, depth + 1)}|{random_regex(rng, depth + 1)})"
    inner = random_regex(rng, depth + 1)
    return f"({inner}){rng.choice(['*', '+', '?', '{1,2}', '{2}'])}"


def text_of(ids, tok) -> str | None:
    """The text a span decodes to (cut at the first EOS; None when a non-EOS/pad token follows
    the EOS, or a mask / unknown id is present)."""
    out, ended = [], False
    for v in ids:
        if v == tok.eos_id or (ended and v == tok.pad_id):
            ended = True
        elif ended or v >= len(TEXT):
            return None
        else:
            out.append(TEXT[v])
    return "".join(out)


def full_match(pattern: str, text: str | None) -> bool:
    return text is not None and re.fullmatch(pattern, text, flags=re.DOTALL) is not None


def tiny_models(tokenizer, seq_len: int = 48, seed: int = 0):
    """Random-weight (ar, mdlm, block) Models over `tokenizer` (a byte tokenizer's 259 ids)."""
    from redraft.config import ModelConfig
    from redraft.diffusion import LogLinearSchedule, MaskProcess
    from redraft.model import Model
    from redraft.models.transformer import Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=1, n_head=2, d_model=32, seq_len=seq_len)
    v = tokenizer.vocab_size
    proc = MaskProcess(tokenizer.mask_id, LogLinearSchedule())
    ar = Model(Transformer(cfg, v, causal=True).eval(), tokenizer, "ar", name="ar")
    mdlm = Model(Transformer(cfg, v, causal=False).eval(), tokenizer, "mdlm", proc, name="mdlm")
    block = Model(Transformer(cfg, v, causal=False, block_size=8).eval(), tokenizer, "block",
                  MaskProcess(tokenizer.mask_id, LogLinearSchedule()), name="block")
    return SimpleNamespace(ar=ar, mdlm=mdlm, block=block)
