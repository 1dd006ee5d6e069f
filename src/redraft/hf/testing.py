"""Tiny random-weight Hugging Face models written to a folder, for tests and benchmarks (no
download): a character tokenizer with a chat template, and a DiffusionGemma, a remote-code
masked diffusion model (its modelling file written beside its config, with auto_map) or a
causal LM (Llama) over it. Like transformers' own tests, these check the plumbing, not quality.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

SPECIALS = ("<pad>", "<eos>", "<bos>", "<mask>")
CHARS = string.ascii_letters + string.digits + " .,:;!?'\"()-\n<>|/_"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def write_tokenizer(folder: str | Path, vocab_size: int | None = None) -> int:
    """A character-level tokenizer (ids: <pad> 0, <eos> 1, <bos> 2, <mask> 3, then the
    characters, then unused ids up to vocab_size). Returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c in CHARS:
        vocab[c] = len(vocab)
    n = max(vocab_size or 0, len(vocab))
    for i in range(len(vocab), n):
        vocab[f"<unused{i}>"] = i
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                  bos_token="<bos>", mask_token="<mask>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(folder))
    return n


def tiny_gemma(folder: str | Path, *, hidden: int = 32, layers: int = 2, heads: int = 2,
               canvas: int = 4, vocab_size: int | None = None, experts: int = 2,
               sliding_window: int = 8, seed: int = 0, generation: dict | None = None,
               sharpen: float = 1.0) -> Path:
    """A random DiffusionGemma (text part; a 1-layer stub vision tower the config requires).
    sharpen > 1 scales the final norm so the logits are peaked: low entropies, so the
    entropy-bound rule accepts many tokens and rows stop early (random weights alone give
    near-uniform logits)."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v = write_tokenizer(folder, vocab_size)
    head_dim = hidden // heads
    types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    types[-1] = "full_attention"
    text = dict(vocab_size=v, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                head_dim=head_dim, global_head_dim=head_dim, sliding_window=sliding_window,
                layer_types=types, max_position_embeddings=512, pad_token_id=0,
                eos_token_id=1, bos_token_id=2, num_experts=experts, top_k_experts=1,
                moe_intermediate_size=hidden)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32,
                  num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, head_dim=16,
                  patch_size=2, position_embedding_size=8)
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas,
                               boi_token_id=v - 3, eoi_token_id=v - 2, image_token_id=v - 1)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    with torch.no_grad():
        model.model.decoder.norm.weight.mul_(sharpen)
    if generation:
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
            DiffusionGemmaGenerationConfig,
            EntropyBoundSamplerConfig,
        )

        g = dict(generation)
        if "entropy_bound" in g:
            g["sampler_config"] = EntropyBoundSamplerConfig(entropy_bound=g.pop("entropy_bound"))
        model.generation_config = DiffusionGemmaGenerationConfig(**g)
    model.save_pretrained(str(folder))
    return folder


MASKED_CODE = '''"""A tiny masked diffusion LM with remote code (LLaDA-style)."""
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class TinyMaskedConfig(PretrainedConfig):
    model_type = "tiny_masked"

    def __init__(self, vocab_size=80, hidden_size=32, num_layers=2, num_heads=2,
                 max_position_embeddings=128, mask_token_id=3, **kw):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_layers, self.num_heads = num_layers, num_heads
        self.max_position_embeddings, self.mask_token_id = max_position_embeddings, mask_token_id
        super().__init__(**kw)


class TinyMaskedModel(PreTrainedModel):
    config_class = TinyMaskedConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        layer = nn.TransformerEncoderLayer(config.hidden_size, config.num_heads,
                                           2 * config.hidden_size, dropout=0.0,
                                           batch_first=True)
        self.body = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kw):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.body(self.embed(input_ids) + self.pos(pos))  # bidirectional: no mask
        return MaskedLMOutput(logits=self.head(h))
'''


def tiny_masked(folder: str | Path, *, seed: int = 0, model_type: str = "tiny_masked") -> Path:
    """A remote-code masked model: modeling_tiny.py + config.json with auto_map, random weights
    saved with torch (the test loads it with trust_remote_code)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v = write_tokenizer(folder)
    (folder / "modeling_tiny.py").write_text(MASKED_CODE)
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_tiny_masked_{seed}",
                                                  folder / "modeling_tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.TinyMaskedConfig(vocab_size=v, mask_token_id=3)
    torch.manual_seed(seed)
    model = mod.TinyMaskedModel(cfg).eval()
    save_file({k: t.contiguous() for k, t in model.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf.update(model_type=model_type, architectures=["TinyMaskedModel"],
                auto_map={"AutoConfig": "modeling_tiny.TinyMaskedConfig",
                          "AutoModel": "modeling_tiny.TinyMaskedModel"})
    (folder / "config.json").write_text(json.dumps(conf, indent=1))
    return folder


def tiny_causal(folder: str | Path, *, seed: int = 0) -> Path:
    """A random Llama causal LM over the character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v = write_tokenizer(folder)
    cfg = LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                      pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).eval().save_pretrained(str(folder))
    return folder
