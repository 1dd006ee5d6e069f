"""The exported fast tokenizer gives redraft's ids (and text back) for every tokenizer kind."""

from __future__ import annotations

import pytest

from redraft.data.tokenizers import build_tokenizer
from redraft.export.tokenizer import byte_alphabet, write_hf_tokenizer

transformers = pytest.importorskip("transformers")

CORPUS = "the cat sat on the mat.\nthe dog ate the hat!  tabs\there, é and 漢字 too\n" * 20
TEXTS = ["the cat sat", "  the  hat\n\tate a dog", "é 漢字 !", ""]


def test_byte_alphabet_is_gpt2s():
    alphabet = byte_alphabet()
    assert len(set(alphabet.values())) == 256
    assert alphabet[ord("a")] == "a" and alphabet[ord(" ")] == "Ġ" and alphabet[10] == "Ċ"


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_fast_tokenizer_gives_redraft_ids(tmp_path, kind):
    tok = build_tokenizer(kind, lambda: [CORPUS], vocab_size=300)
    tok.save(tmp_path)
    write_hf_tokenizer(tok, tmp_path, max_length=64)
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for text in TEXTS:
        ids = fast(text, add_special_tokens=False).input_ids
        assert ids == tok.encode(text), text
        assert fast.decode(ids) == text
    assert (fast.eos_token_id, fast.pad_token_id, fast.mask_token_id) == (
        tok.eos_id, tok.pad_id, tok.mask_id)
    assert fast.model_max_length == 64
