"""Generative perplexity: how likely a judge language model finds a set of texts.

The definition redraft uses, stated once:

1. Each sample is the generator's token row cut at its first EOS (EOS and everything after it
   dropped; the EOS itself is not scored), then decoded to text. A sample that still holds a
   mask token is an error: an unfinished draft has no text to judge.
2. The judge retokenises each text with its own tokenizer. A text of n judge tokens is scored
   in windows of at most the judge's context W: window j holds tokens [jW, (j+1)W) and is read
   as [BOS, its tokens but the last], so every token is predicted from BOS plus the preceding
   tokens of its window (exactly how the judge's own validation loss is computed on windows).
3. gen-ppl = exp( sum of -ln p_judge(token) over every scored token of every text
                  / number of scored tokens ), a per-token mean over all sampled tokens
   (not a mean of per-sample perplexities, which long samples would under-weight).

Judges: any redraft AR checkpoint (a run folder or ckpt-* folder), or a Hugging Face causal-LM
folder (config.json + weights + tokenizer files, loaded with `transformers`, no network).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from redraft.errors import RedraftError


@dataclass
class Score:
    nll: float  # summed -ln p over scored tokens
    tokens: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


class Judge:
    """Base: subclasses give `encode(text)`, `bos_id`, `context` and `_logits(ids (B, T))`."""

    name: str
    bos_id: int
    context: int
    batch_size: int = 16

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> list[Score]:
        """One Score per text (a text with no tokens scores 0 tokens)."""
        windows: list[tuple[int, list[int]]] = []  # (text index, window tokens)
        for i, text in enumerate(texts):
            ids = self.encode(text)
            for start in range(0, len(ids), self.context):
                windows.append((i, ids[start:start + self.context]))
        scores = [Score(0.0, 0) for _ in texts]
        # Longest first, so each batch pads little; right padding never affects earlier
        # positions of a causal model, and padded targets are masked out.
        windows.sort(key=lambda w: -len(w[1]))
        for b in range(0, len(windows), self.batch_size):
            group = windows[b:b + self.batch_size]
            T = len(group[0][1])
            target = torch.zeros((len(group), T), dtype=torch.long)
            valid = torch.zeros((len(group), T), dtype=torch.bool)
            for r, (_, w) in enumerate(group):
                target[r, :len(w)] = torch.tensor(w)
                valid[r, :len(w)] = True
            inputs = torch.cat((torch.full((len(group), 1), self.bos_id), target[:, :-1]), 1)
            logp = F.log_softmax(self._logits(inputs).double(), dim=-1)  # (B, T, V)
            nll = -logp.gather(-1, target[..., None])[..., 0] * valid  # (B, T)
            for r, (i, w) in enumerate(group):
                scores[i].nll += float(nll[r].sum())
                scores[i].tokens += len(w)
        return scores

    def gen_ppl(self, texts: Sequence[str]) -> tuple[float, float, int]:
        """(gen-ppl, mean nats per judge token, judge tokens scored) over all texts."""
        scores = self.score(texts)
        nll, n = sum(s.nll for s in scores), sum(s.tokens for s in scores)
        if n == 0:
            raise RedraftError("nothing to judge: every sample is empty")
        return math.exp(nll / n), nll / n, n


class RedraftJudge(Judge):
    """A redraft AR checkpoint as judge."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        from redraft.checkpoint import load_checkpoint
        from redraft.diffusion import objective

        ck = load_checkpoint(path, device=device)
        if not objective(ck.config.diffusion.objective).autoregressive:
            raise RedraftError(f"judge {str(path)!r} is a {ck.config.diffusion.objective!r} "
                               "model: the judge must be an autoregressive (objective 'ar') "
                               "checkpoint")
        self.ck, self.model, self.tokenizer = ck, ck.model, ck.tokenizer
        self.bos_id, self.context = ck.tokenizer.eos_id, ck.config.model.seq_len
        self.name = str(ck.path)
        self.params = ck.model.num_params()

    def encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text)
        except RedraftError as e:
            raise RedraftError(f"the judge's tokenizer cannot read a sample: {e}") from None

    def _logits(self, ids):
        return self.model(ids.to(next(self.model.parameters()).device)).cpu()


class HFJudge(Judge):
    """A Hugging Face causal LM folder as judge (needs `transformers`; never downloads)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise RedraftError("a Hugging Face judge needs `transformers`: "
                               "pip install 'redraft[hf]'") from None
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self.model.to(device).eval()
        bos = self.tokenizer.bos_token_id
        self.bos_id = bos if bos is not None else self.tokenizer.eos_token_id
        if self.bos_id is None:
            raise RedraftError(f"judge {str(path)!r}: its tokenizer has neither a BOS nor an EOS "
                               "token to start a window with")
        cfg = self.model.config
        self.context = int(getattr(cfg, "n_positions", None)
                           or getattr(cfg, "max_position_embeddings", None) or 1024) - 1
        self.name = str(path)
        self.params = sum(p.numel() for p in self.model.parameters())

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _logits(self, ids):
        return self.model(input_ids=ids.to(self.model.device)).logits.cpu()


def load_judge(path: str | Path, device: str = "cpu") -> Judge:
    """A redraft AR checkpoint / run folder, "default-ar" (the shipped AR twin), or a Hugging
    Face causal-LM folder."""
    from redraft.default import shipped

    p = shipped(path) or Path(path)
    if not p.exists():
        raise RedraftError(f"judge {str(path)!r} does not exist")
    config = p / "config.json"
    if config.is_file():
        try:
            meta = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RedraftError(f"judge {str(path)!r}: unreadable config.json ({e})") from None
        if "model_type" in meta and meta.get("format") != "redraft-checkpoint":
            return HFJudge(p, device)
    return RedraftJudge(p, device)


def texts_of(tokens, tokenizer) -> list[str]:
    """Step 1 of the definition: cut each row at its first EOS, refuse masks, decode."""
    texts = []
    for row in tokens:
        row = [int(v) for v in row]
        if tokenizer.eos_id in row:
            row = row[:row.index(tokenizer.eos_id)]
        if tokenizer.mask_id in row:
            raise RedraftError("a sample still holds mask tokens: finish denoising before "
                               "judging it")
        texts.append(tokenizer.decode(row))
    return texts
