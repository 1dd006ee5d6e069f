"""redraft's tokenizers as Hugging Face fast tokenizers (tokenizer.json + tokenizer_config.json),
so that `AutoTokenizer.from_pretrained(folder)` gives the ids redraft gives.

    char   a WordLevel model over the characters, every character its own piece, pieces
           fused back together on decode
    byte   a byte-level BPE without merges: byte b is id b (GPT-2's printable alphabet maps
           bytes to the characters the BPE model stores)
    bpe    the tokenizers.Tokenizer redraft already uses, as it is
    hf

The specials (<eos>, <pad>, <mask> or the adopted tokenizer's) keep their ids. A character
outside a char vocabulary, an error in redraft, becomes the pad id there (WordLevel needs an
unknown token, and the vocabulary has no other to spare).
"""

from __future__ import annotations

import json
from pathlib import Path

from redraft.data import Tokenizer
from redraft.data.tokenizers import SPECIALS, BackendTokenizer, ByteTokenizer, CharTokenizer
from redraft.errors import RedraftError


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel pre-tokenizers
    write): printable Latin-1 bytes map to themselves, the rest to 256 + n in order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def special_names(tok: Tokenizer) -> dict[str, str]:
    """The text of the eos / pad / mask tokens."""
    if isinstance(tok, BackendTokenizer):
        return dict(tok.special_tokens)
    return dict(zip(("eos", "pad", "mask"), SPECIALS, strict=True))


def hf_backend(tok: Tokenizer):
    """A tokenizers.Tokenizer that encodes text to the ids `tok` gives."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    names = special_names(tok)
    if isinstance(tok, BackendTokenizer):
        return Backend.from_str(tok.backend.to_str())
    if isinstance(tok, CharTokenizer):
        vocab = {c: i for i, c in enumerate(tok.chars)}
        vocab.update({names["eos"]: tok.eos_id, names["pad"]: tok.pad_id,
                      names["mask"]: tok.mask_id})
        backend = Backend(models.WordLevel(vocab, unk_token=names["pad"]))
        # One piece per character (newlines included), glued back together on decode.
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
    elif isinstance(tok, ByteTokenizer):
        alphabet = byte_alphabet()
        vocab = {alphabet[b]: b for b in range(256)}
        vocab.update({names["eos"]: tok.eos_id, names["pad"]: tok.pad_id,
                      names["mask"]: tok.mask_id})
        backend = Backend(models.BPE(vocab, [], fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                         use_regex=False)
        backend.decoder = decoders.ByteLevel()
    else:
        raise RedraftError(f"tokenizer kind {tok.kind!r}: expected char, byte, bpe or hf")
    backend.add_special_tokens([AddedToken(names[r], special=True)
                                for r in ("eos", "pad", "mask")])
    return backend


def write_hf_tokenizer(tok: Tokenizer, folder: Path, max_length: int) -> None:
    """tokenizer.json (unless redraft already wrote its own: bpe, hf) and tokenizer_config.json
    into `folder`; redraft's own redraft_tokenizer.json is written beside them by the caller."""
    if not isinstance(tok, BackendTokenizer):
        (folder / "tokenizer.json").write_text(hf_backend(tok).to_str(pretty=True),
                                               encoding="utf-8")
    names = special_names(tok)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": names["eos"],
        "pad_token": names["pad"],
        "mask_token": names["mask"],
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2),
                                                  encoding="utf-8")
    specials = {f"{role}_token": names[role] for role in ("eos", "pad", "mask")}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2),
                                                    encoding="utf-8")
