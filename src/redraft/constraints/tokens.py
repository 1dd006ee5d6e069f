"""The bytes each token id stands for (None: a special id that never appears in text).

A constraint is checked on the text a row decodes to, so each token must be the exact byte
string it contributes when ids are concatenated and decoded. Per tokenizer kind:

    byte   id < 256 is that byte
    char   its character, UTF-8
    bpe    byte-level pieces (GPT-2's byte-to-unicode alphabet), mapped back to bytes
    hf     byte-level vocabularies as bpe; SentencePiece pieces ("\u2581" for a space,
           "<0xNN>" byte fallback); otherwise the piece's own text

Special ids (eos, pad, mask, bos, and a backend's added special tokens) are None.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

_HEX = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _byte_level(backend) -> bool | None:
    """Whether a tokenizers.Tokenizer decodes with ByteLevel (None: cannot tell)."""
    try:
        decoder = json.loads(backend.to_str()).get("decoder")
    except Exception:  # an exotic backend: fall back to looking at the pieces
        return None
    return "ByteLevel" in json.dumps(decoder)


def _pieces_to_bytes(pieces: list[str | None], specials: set[int],
                     byte_level: bool | None = None) -> list[bytes | None]:
    dec = _byte_decoder()
    texts = [p for i, p in enumerate(pieces) if p is not None and i not in specials]
    if byte_level is None:
        byte_level = bool(texts) and all(all(ch in dec for ch in p) for p in texts)
    out: list[bytes | None] = []
    for i, p in enumerate(pieces):
        if p is None or i in specials:
            out.append(None)
        elif byte_level:
            out.append(bytes(dec[ch] for ch in p))
        elif (m := _HEX.fullmatch(p)) is not None:
            out.append(bytes([int(m.group(1), 16)]))
        else:
            out.append(p.replace("\u2581", " ").encode("utf-8"))
    return out


def token_bytes(tokenizer, vocab_size: int | None = None) -> list[bytes | None]:
    """Per id in 0..vocab_size-1 (default: the tokenizer's): its bytes, or None."""
    v = vocab_size or tokenizer.vocab_size
    specials = {tokenizer.eos_id, tokenizer.pad_id, tokenizer.mask_id}
    if getattr(tokenizer, "bos_id", None) is not None:
        specials.add(tokenizer.bos_id)
    kind = getattr(tokenizer, "kind", "")
    if kind == "byte":
        return [bytes([i]) if i < 256 and i not in specials else None for i in range(v)]
    if kind == "char":
        chars = tokenizer.chars
        return [chars[i].encode("utf-8") if i < len(chars) and i not in specials else None
                for i in range(v)]
    backend = getattr(tokenizer, "backend", None)
    if backend is not None:  # bpe, or an adopted tokenizers.Tokenizer
        added = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
        pieces = [backend.id_to_token(i) for i in range(v)]
        return _pieces_to_bytes(pieces, specials | added, _byte_level(backend))
    tok = getattr(tokenizer, "tok", None)
    if tok is not None:  # transformers' tokenizer (redraft.hf)
        specials |= set(getattr(tok, "all_special_ids", []) or [])
        pieces = tok.convert_ids_to_tokens(list(range(min(v, len(tok)))))
        pieces = list(pieces) + [None] * (v - len(pieces))
        backend = getattr(tok, "backend_tokenizer", None)
        return _pieces_to_bytes(pieces, specials,
                                None if backend is None else _byte_level(backend))
    from redraft.errors import RedraftError

    raise RedraftError(f"constraints: cannot tell the bytes of a {type(tokenizer).__name__} "
                       "tokenizer's tokens")
