"""A Hugging Face tokenizer (AutoTokenizer) behind redraft's Tokenizer interface, with its chat
template.

redraft's samplers need three ids: eos (text ends), pad, and mask (the absorbing state of
masked diffusion). They come from the tokenizer's own special tokens; the mask id may come
from the model's config or a flag instead (LLaDA's config names it, Dream's tokenizer does).
A model without a mask state (DiffusionGemma, causal LMs) uses the pad id as a placeholder
for not-yet-generated positions in drafts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from redraft.data.tokenizers import Tokenizer
from redraft.errors import RedraftError


class HFTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, tok, vocab_size: int, mask_id: int | None = None):
        self.tok = tok
        self.vocab_size = vocab_size  # the logits' width: ids the model can emit
        eos = tok.eos_token_id
        if eos is None:
            raise RedraftError(f"tokenizer {tok.name_or_path!r} has no EOS token")
        self.eos_id = int(eos)
        self.bos_id = None if tok.bos_token_id is None else int(tok.bos_token_id)
        self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_id
        if mask_id is None:
            mask_id = tok.mask_token_id if tok.mask_token_id is not None else self.pad_id
        self.mask_id = int(mask_id)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def _decode_plain(self, ids: np.ndarray) -> str:
        return self.tok.decode(ids.tolist(), skip_special_tokens=True)

    def _definition(self):
        return {"name": str(self.tok.name_or_path), "vocab": len(self.tok)}

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tok, "chat_template", None))

    def chat(self, messages: Sequence[dict]) -> str:
        """The prompt text of `messages` ([{"role", "content"}]) by the tokenizer's chat
        template, ending where the assistant's reply starts."""
        if not self.has_chat_template:
            raise RedraftError(f"tokenizer {self.tok.name_or_path!r} has no chat template")
        try:
            return self.tok.apply_chat_template(list(messages), tokenize=False,
                                                add_generation_prompt=True)
        except Exception as e:  # jinja errors: a template that refuses these roles
            raise RedraftError(f"the chat template refused the messages: {e}") from None
