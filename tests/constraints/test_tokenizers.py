"""Each tokenizer kind's token bytes concatenate to the text its decode gives, and constrained
decoding works through Hugging Face models (causal: hf_causal's lockstep lane; masked: the
canvas decoder)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("interegular")
pytest.importorskip("outlines_core")

from redraft.constraints.tokens import token_bytes  # noqa: E402
from redraft.data.tokenizers import ByteTokenizer, CharTokenizer, build_tokenizer  # noqa: E402
from redraft.errors import RedraftError  # noqa: E402

TEXTS = ['{"name": "Zoë", "n": [1, 2.5e3]}', "déjà vu\n  spaces\tand € signs", "abc" * 20]


def _roundtrip(tok):
    table = token_bytes(tok)
    for text in TEXTS:
        ids = tok.encode(text)
        assert b"".join(table[i] for i in ids).decode("utf-8") == tok.decode(ids) == text
    for special in (tok.eos_id, tok.pad_id, tok.mask_id):
        assert table[special] is None


def test_byte_char_and_bpe_tokens_are_their_text():
    _roundtrip(ByteTokenizer())
    _roundtrip(CharTokenizer(sorted(set("".join(TEXTS)))))
    bpe = build_tokenizer("bpe", lambda: TEXTS * 20, vocab_size=300)
    assert max(len(b) for b in token_bytes(bpe) if b) > 1  # merges: multi-byte tokens
    _roundtrip(bpe)


def test_hugging_face_models_decode_under_a_constraint(tmp_path):
    pytest.importorskip("transformers")
    import redraft
    from redraft.hf.testing import tiny_causal, tiny_masked

    causal = redraft.load(f"hf:{tiny_causal(tmp_path / 'c')}")
    masked = redraft.load(f"hf:{tiny_masked(tmp_path / 'm')}?trust_remote_code=1")
    assert causal.decoder.name == "hf_causal" and masked.decoder.name == "canvas"
    _roundtrip_hf = token_bytes(causal.tokenizer)
    ids = causal.tokenizer.encode("abc")
    assert b"".join(_roundtrip_hf[i] for i in ids).decode() == causal.tokenizer.decode(ids)
    pattern = "[a-c]{2,4}(x|y)?"
    c = {"type": "regex", "pattern": pattern}
    out = causal.generate("a", max_new_tokens=6, num_samples=4, constraint=c)
    assert all(re.fullmatch(pattern, t) for t in out.completions), out.completions
    out = masked.generate("a", max_new_tokens=6, num_samples=3, steps=3, constraint=c)
    assert all(re.fullmatch(pattern, t) for t in out.completions), out.completions
    if b"{" not in token_bytes(causal.tokenizer):  # the test tokenizer has no braces
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        with pytest.raises(RedraftError, match="no text of this tokenizer's tokens"):
            causal.generate("a", max_new_tokens=12,
                            constraint={"type": "json_schema", "schema": schema})
