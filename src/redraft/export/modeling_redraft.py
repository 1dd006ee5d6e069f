"""redraft's Transformer for Hugging Face transformers (`trust_remote_code=True`).

`redraft export` copies this file, unchanged, next to config.json and model.safetensors, so
that

    AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)   # mdlm, sedd, block
    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)   # the AR twin
    AutoModel.from_pretrained(folder, trust_remote_code=True)              # either: logits

give the logits redraft gives. It needs only torch and transformers (no redraft): it is a
second, plain reading of redraft.models.transformer, with the same parameter names, so the
weights load as they are. Logits (B, L, V) of input_ids (B, L):

    h = embed(x) [+ time(t)]                      t (B,) or (B, L), when time-conditioned
    h = h + attn(norm1(h)); h = h + out(gelu(fc(norm2(h))))     n_layer times, rotary q/k
    logits = head(norm(h))

Attention (config.attention): "causal" (the AR twin: logits at position p predict token
p + 1, inputs start with eos as BOS), "bidirectional" (masked diffusion: logits at p are the
denoiser of position p, the mask id is config.mask_token_id) or "block" (block diffusion:
bidirectional inside blocks of config.block_size, causal across them; with
config.block_shift the output at p predicts token p of a sequence fed shifted right by one,
[bos, x_0 .. x_{L-2}], as in training; config.block_reveal_last: trained to reveal each
block's last position after the others). config.objective, process, schedule say what the
logits mean (see redraft's diffusion/registry.py); sampling loops live in redraft.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput, MaskedLMOutput

try:  # transformers >= 4.50 wants generate() support declared by inheritance
    from transformers.generation import GenerationMixin
except ImportError:  # pragma: no cover - older transformers
    GenerationMixin = object


class RedraftConfig(PretrainedConfig):
    model_type = "redraft"

    def __init__(self, vocab_size: int = 259, n_layer: int = 4, n_head: int = 4,
                 d_model: int = 128, mlp_ratio: int = 4, seq_len: int = 256,
                 time_conditioning: bool = False, rope_base: float = 10000.0,
                 attention: str = "bidirectional", block_size: int | None = None,
                 block_shift: bool = True, block_reveal_last: bool = False,
                 objective: str = "mdlm", process: str | None = "mask",
                 schedule: str = "loglinear", schedule_eps: float | None = None,
                 mask_token_id: int | None = None, tie_word_embeddings: bool = True, **kwargs):
        self.vocab_size, self.n_layer, self.n_head = vocab_size, n_layer, n_head
        self.d_model, self.mlp_ratio, self.seq_len = d_model, mlp_ratio, seq_len
        self.time_conditioning, self.rope_base = time_conditioning, rope_base
        self.attention, self.block_size, self.block_shift = attention, block_size, block_shift
        self.block_reveal_last = block_reveal_last
        self.objective, self.process = objective, process
        self.schedule, self.schedule_eps = schedule, schedule_eps
        self.mask_token_id = mask_token_id
        self.tie_word_embeddings = tie_word_embeddings
        # The names transformers' generic code looks for.
        self.hidden_size, self.num_hidden_layers = d_model, n_layer
        self.num_attention_heads, self.max_position_embeddings = n_head, seq_len
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


def _rope(length: int, head_dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (length, head_dim/2), computed in float64 then rounded as redraft does."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float().to(device), angles.sin().float().to(device)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class RedraftAttention(nn.Module):
    def __init__(self, config: RedraftConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x, cos, sin, mask, is_causal):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)  # (B, H, L, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class RedraftBlock(nn.Module):
    def __init__(self, config: RedraftConfig):
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, bias=False)
        self.attn = RedraftAttention(config)
        self.norm2 = nn.LayerNorm(d, bias=False)
        self.fc = nn.Linear(d, config.mlp_ratio * d, bias=False)
        self.out = nn.Linear(config.mlp_ratio * d, d, bias=False)

    def forward(self, x, cos, sin, mask, is_causal):
        x = x + self.attn(self.norm1(x), cos, sin, mask, is_causal)
        return x + self.out(F.gelu(self.fc(self.norm2(x))))


class RedraftTimeEmbedding(nn.Module):
    """Sinusoidal features of t -> d_model through a small MLP (redraft's TimeEmbedding)."""

    def __init__(self, d_model: int, n_freq: int = 64):
        super().__init__()
        self.n_freq = n_freq
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, d_model), nn.SiLU(),
                                 nn.Linear(d_model, d_model))

    def forward(self, t):
        freqs = torch.exp(-math.log(1e4) * torch.arange(self.n_freq, device=t.device)
                          / self.n_freq)
        angles = 1000.0 * t.float()[..., None] * freqs
        return self.mlp(torch.cat((angles.cos(), angles.sin()), dim=-1))


class RedraftPreTrainedModel(PreTrainedModel):
    config_class = RedraftConfig
    base_model_prefix = "redraft"
    _supports_sdpa = True
    _tied_weights_keys = {"head.weight": "embed.weight"}

    def __init__(self, config: RedraftConfig):
        super().__init__(config)
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        causal = config.attention == "causal"
        self.time = RedraftTimeEmbedding(d) if config.time_conditioning and not causal else None
        self.blocks = nn.ModuleList(RedraftBlock(config) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.head

    def set_output_embeddings(self, value):
        self.head = value

    def _mask(self, L: int, attention_mask, device):
        """(bool mask or None, is_causal) for SDPA, True = attend; redraft's pattern, plus
        padding keys (attention_mask 0) hidden when given (a query still sees itself, so a
        padded row gives finite, ignorable logits)."""
        kind = self.config.attention
        pad = attention_mask is not None and not bool(attention_mask.all())
        q = torch.arange(L, device=device)
        if kind == "causal":
            if not pad:
                return None, True
            allowed = q[None, :] <= q[:, None]
        elif kind == "block" and self.config.block_size < L:
            b = self.config.block_size
            allowed = (q[None, :] // b) <= (q[:, None] // b)
        else:
            if not pad:
                return None, False
            allowed = torch.ones(L, L, dtype=torch.bool, device=device)
        if pad:
            keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
            allowed = (allowed[None, None] & keys) | torch.eye(L, dtype=torch.bool,
                                                               device=device)
        return allowed, False

    def logits(self, input_ids: torch.Tensor, timesteps: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, L, V) of input_ids (B, L); timesteps (B,) or (B, L) in [0, 1] (t = 0
        clean, t = 1 all noise) for time-conditioned models."""
        B, L = input_ids.shape
        if input_ids.shape[1] > self.config.seq_len:
            raise ValueError(f"sequence of {L} tokens exceeds seq_len={self.config.seq_len}")
        h = self.embed(input_ids)
        if self.time is not None:
            if timesteps is None:
                raise ValueError("this model is time-conditioned: pass timesteps (B,) or (B, L)")
            t = torch.as_tensor(timesteps, device=h.device).float()
            t = t.expand(B) if t.dim() == 0 else t
            h = h + (self.time(t)[:, None, :] if t.dim() == 1 else self.time(t))
        cos, sin = _rope(L, self.config.d_model // self.config.n_head, self.config.rope_base,
                         h.device)
        mask, is_causal = self._mask(L, attention_mask, h.device)
        for block in self.blocks:
            h = block(h, cos, sin, mask, is_causal)
        return self.head(self.norm(h))


class RedraftForMaskedLM(RedraftPreTrainedModel):
    """Diffusion checkpoints (mdlm, udlm, sedd, block): the denoiser's logits."""

    def forward(self, input_ids=None, attention_mask=None, timesteps=None, labels=None,
                return_dict=None, **kwargs):
        logits = self.logits(input_ids, timesteps, attention_mask)
        loss = None
        if labels is not None:  # plain cross-entropy at the labelled positions (-100: none)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                   ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)


class RedraftForCausalLM(RedraftPreTrainedModel, GenerationMixin):
    """The AR twin: next-token logits; generate() reruns the whole prefix (no KV cache)."""

    _supports_cache_class = False

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None,
                **kwargs):
        logits = self.logits(input_ids, None, attention_mask)
        loss = None
        if labels is not None:  # next-token cross-entropy, as transformers' causal LMs
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                   labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}
