"""Tokenizers: text <-> integer ids, plus the three special ids diffusion needs.

Every tokenizer has `eos_id` (separates documents in the token stream), `pad_id` and
`mask_id` (the absorbing state of masked diffusion). Plain text never encodes to any of
them, so a mask in `xt` always means "not yet decided" and never "the text said <mask>".

Four kinds, one class each (BPE and HF share a backend class):

    char   the sorted characters of a corpus, then <eos>, <pad>, <mask>
    byte   UTF-8 bytes 0..255, then eos=256, pad=257, mask=258
    bpe    byte-level BPE trained here with the `tokenizers` package
    hf     an existing tokenizer.json or GPT-2 style vocab.json + merges.txt

`save(directory)` / `load_tokenizer(directory)` round-trip all of them, and `fingerprint`
names the full definition so token shards can be cached per tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from redraft.errors import RedraftError

FORMAT_VERSION = 1
META_FILE = "redraft_tokenizer.json"
BACKEND_FILE = "tokenizer.json"
KINDS = ("char", "byte", "bpe", "hf")
SPECIALS = ("<eos>", "<pad>", "<mask>")

# Tried in order when adopting an existing tokenizer's specials.
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eos|>")
_PAD_CANDIDATES = ("<pad>", "<|pad|>", "[PAD]", "<|padding|>")
_MASK_CANDIDATES = ("<mask>", "[MASK]", "<|mask|>")


class Tokenizer:
    """Base class: subclasses set the attributes and implement `encode`, `_decode_plain`,
    `_definition` and `_save_backend`."""

    kind: str
    vocab_size: int  # total, specials included
    eos_id: int
    pad_id: int  # may equal eos_id for adopted tokenizers without a pad token
    mask_id: int

    @property
    def non_text_ids(self) -> list[int]:
        """Ids a generator must never emit: mask, and pad unless it doubles as EOS."""
        return sorted({self.mask_id, self.pad_id} - {self.eos_id})

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, no special tokens added."""
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids, mask_text: str | None = None) -> str:
        """Text of `ids` (list, 1-D ndarray or 1-D tensor); eos and pad are dropped.

        Masks are dropped too unless `mask_text` is given, in which case each mask renders
        as `mask_text` (to show a partially denoised draft).
        """
        arr = self._as_ids(ids)
        specials = np.array([self.eos_id, self.pad_id], dtype=np.int64)
        if mask_text is None:
            return self._decode_plain(arr[~np.isin(arr, np.append(specials, self.mask_id))])
        # Decode the runs between masks separately so each mask lands where it was.
        runs = np.split(arr, np.flatnonzero(arr == self.mask_id))
        runs = [runs[0]] + [run[1:] for run in runs[1:]]
        return mask_text.join(self._decode_plain(run[~np.isin(run, specials)]) for run in runs)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (16 hex chars) of kind, vocabulary and special ids: keys cached shards."""
        definition = {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "specials": [self.eos_id, self.pad_id, self.mask_id],
            "definition": self._definition(),
        }
        blob = json.dumps(definition, sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, directory: str | Path) -> None:
        """Write `redraft_tokenizer.json` (and `tokenizer.json` for bpe/hf) into `directory`."""
        directory = Path(directory)
        if not directory.is_dir():
            raise RedraftError(f"cannot save tokenizer: {str(directory)!r} is not a directory")
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "mask_id": self.mask_id,
            **self._save_backend(directory),
        }
        write_text_atomic(directory / META_FILE, json.dumps(meta, indent=1))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id}, mask_id={self.mask_id})"
        )

    # -- for subclasses ------------------------------------------------------------------

    def _decode_plain(self, ids: np.ndarray) -> str:
        """Text of ids that contain no eos/pad/mask."""
        raise NotImplementedError

    def _definition(self):
        """JSON-able data that, with kind and special ids, fully defines the tokenizer."""
        raise NotImplementedError

    def _save_backend(self, directory: Path) -> dict:
        """Write any extra files; return extra fields for redraft_tokenizer.json."""
        return {}

    def _as_ids(self, ids) -> np.ndarray:
        if not isinstance(ids, np.ndarray) and hasattr(ids, "tolist"):
            ids = ids.tolist()  # torch tensors on any device
        arr = np.asarray(ids)
        if arr.shape == (0,):
            return np.zeros(0, dtype=np.int64)  # np.asarray([]) is float
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise RedraftError(
                f"decode expects a 1-D sequence of integer ids, got shape {arr.shape} "
                f"of dtype {arr.dtype}"
            )
        arr = arr.astype(np.int64, copy=False)
        bad = arr[(arr < 0) | (arr >= self.vocab_size)]
        if bad.size:
            raise RedraftError(
                f"token id {int(bad[0])} is out of range: expected 0 <= id < {self.vocab_size}"
            )
        return arr


class CharTokenizer(Tokenizer):
    """One id per character of a fixed vocabulary; unknown characters are an error."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if not chars or any(len(c) != 1 for c in chars) or chars != sorted(set(chars)):
            raise RedraftError(
                "a char vocabulary must be a non-empty sorted list of distinct single characters"
            )
        self.chars = chars
        # Sorted code points let encode map a whole string with one searchsorted call.
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._lookup = np.array(chars + [""] * len(SPECIALS), dtype=object)
        self.eos_id, self.pad_id, self.mask_id = range(len(chars), len(chars) + 3)
        self.vocab_size = len(chars) + 3

    def encode(self, text: str) -> list[int]:
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        ids = np.searchsorted(self._codepoints, points)
        found = self._codepoints[np.minimum(ids, len(self.chars) - 1)] == points
        if not found.all():
            bad = chr(int(points[np.argmin(found)]))
            raise RedraftError(
                f"character {bad!r} is not in this char tokenizer's vocabulary of "
                f"{len(self.chars)} characters; rebuild the tokenizer on a corpus that has it "
                "or use kind 'byte' or 'bpe'"
            )
        return ids.tolist()

    def _decode_plain(self, ids: np.ndarray) -> str:
        return "".join(self._lookup[ids].tolist())

    def _definition(self):
        return self.chars

    def _save_backend(self, directory: Path) -> dict:
        return {"chars": self.chars}


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids: covers every text, no training, long sequences."""

    kind = "byte"
    eos_id, pad_id, mask_id = 256, 257, 258
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        return np.frombuffer(_utf8(text), dtype=np.uint8).tolist()

    def _decode_plain(self, ids: np.ndarray) -> str:
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def _definition(self):
        return "utf-8"


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of text; a RedraftError for text no UTF-8 holds (a lone surrogate, as
    Python makes of undecodable command-line bytes)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RedraftError(f"text has {text[e.start]!r} at character {e.start}, which is not "
                           "valid Unicode (a lone surrogate): it cannot be encoded") from None


class BackendTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (kind "bpe" when trained here, "hf" when adopted)."""

    def __init__(self, backend, kind: str, eos: str, pad: str, mask: str):
        self.backend = backend
        self.kind = kind
        self.special_tokens = {"eos": eos, "pad": pad, "mask": mask}
        ids = {}
        for role, token in self.special_tokens.items():
            ids[role] = backend.token_to_id(token)
            if ids[role] is None:
                raise RedraftError(f"the {kind} tokenizer has no {role} token {token!r}")
        self.eos_id, self.pad_id, self.mask_id = ids["eos"], ids["pad"], ids["mask"]
        vocab = backend.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        # Specials must stay out of plain text's ids, and a saved tokenizer.json may ask for
        # truncation or padding that would silently cut documents.
        backend.encode_special_tokens = True
        backend.no_truncation()
        backend.no_padding()
        self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def encode(self, text: str) -> list[int]:
        _utf8(text)  # the backend raises an opaque error on a lone surrogate
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self._encode_batch(list(texts), add_special_tokens=False)]

    def _decode_plain(self, ids: np.ndarray) -> str:
        return self.backend.decode(ids.tolist(), skip_special_tokens=True)

    def _definition(self):
        return json.loads(self.backend.to_str())

    def _save_backend(self, directory: Path) -> dict:
        write_text_atomic(directory / BACKEND_FILE, self.backend.to_str(pretty=True))
        return {"special_tokens": self.special_tokens}


def build_tokenizer(
    kind: str,
    texts: Callable[[], Iterable[str]] | None = None,
    vocab_size: int = 4096,
    path: str | None = None,
) -> Tokenizer:
    """Make a tokenizer of `kind`.

    `texts` returns a fresh iterable of documents (needed by "char" and "bpe");
    `vocab_size` is the BPE size with the three specials included (a small corpus may yield
    fewer merges); `path` is the tokenizer for "hf".
    """
    if kind not in KINDS:
        raise RedraftError(f"unknown tokenizer kind {kind!r}: expected one of {KINDS}")
    if path is not None and kind != "hf":
        raise RedraftError(f"tokenizer path {path!r} is only used with kind 'hf', not {kind!r}")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "hf":
        if path is None:
            raise RedraftError("tokenizer kind 'hf' needs a path (tokenizer.json or a folder)")
        return _adopt(path)
    if texts is None:
        raise RedraftError(f"tokenizer kind {kind!r} is built from a corpus: texts is required")
    if kind == "char":
        seen: set[str] = set()
        for text in texts():
            seen.update(text)
        if not seen:
            raise RedraftError("cannot build a char tokenizer: the corpus has no characters")
        return CharTokenizer(sorted(seen))
    return _train_bpe(texts, vocab_size)


def _train_bpe(texts: Callable[[], Iterable[str]], vocab_size: int) -> BackendTokenizer:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    smallest = 256 + len(SPECIALS)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise RedraftError(
            f"bpe vocab_size {vocab_size!r} is too small: expected an int >= {smallest} "
            "(256 byte tokens and 3 specials)"
        )
    backend = Backend(models.BPE())
    # Byte-level pieces make every string encodable and decode back exactly.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts(), trainer=trainer)
    return BackendTokenizer(backend, "bpe", *SPECIALS)


def _adopt(path: str | Path) -> BackendTokenizer:
    """Wrap an existing tokenizer, reusing its eos/pad tokens and adding <mask> if needed."""
    backend = _load_existing(Path(path))
    vocab = backend.get_vocab(with_added_tokens=True)
    eos = next((t for t in _EOS_CANDIDATES if t in vocab), None)
    if eos is None:
        eos = SPECIALS[0]
    pad = next((t for t in _PAD_CANDIDATES if t in vocab), eos)
    mask = next((t for t in _MASK_CANDIDATES if t in vocab), SPECIALS[2])
    # add_special_tokens registers tokens already in the vocab without new ids, so specials
    # that were plain vocabulary entries (GPT-2's <|endoftext|>) keep their ids.
    backend.add_special_tokens(list(dict.fromkeys([eos, pad, mask])))
    return BackendTokenizer(backend, "hf", eos, pad, mask)


def _load_existing(path: Path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    if path.is_dir() and (path / BACKEND_FILE).is_file():
        path = path / BACKEND_FILE
    if path.is_file():
        return _read_backend(path)
    if path.is_dir():
        vocab, merges = path / "vocab.json", path / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise RedraftError(
                f"tokenizer folder {str(path)!r} has neither tokenizer.json nor "
                "vocab.json + merges.txt"
            )
        try:
            backend = Backend(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as err:
            raise RedraftError(f"cannot read GPT-2 tokenizer in {str(path)!r}: {err}") from err
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return backend
    spec = str(path)
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        # Shaped like a local path, not a hub name ("name" or "org/name"): do not ask the hub.
        raise RedraftError(f"tokenizer path {spec!r} does not exist; expected a tokenizer.json "
                           "file or a folder with tokenizer.json or vocab.json + merges.txt")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise RedraftError(
            f"tokenizer path {str(path)!r} does not exist; expected a tokenizer.json file or a "
            "folder with tokenizer.json or vocab.json + merges.txt (Hugging Face hub names "
            "need the `transformers` package and network)"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(str(path)).backend_tokenizer
    except Exception as err:
        raise RedraftError(f"cannot load tokenizer {str(path)!r} from the hub: {err}") from err


def _read_backend(file: Path):
    from tokenizers import Tokenizer as Backend

    try:
        return Backend.from_file(str(file))
    except Exception as err:
        raise RedraftError(f"cannot read tokenizer file {str(file)!r}: {err}") from err


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read a tokenizer written by `Tokenizer.save`."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise RedraftError(f"no tokenizer in {str(directory)!r}: expected a file {META_FILE}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        version, kind = meta["format_version"], meta["kind"]
    except (ValueError, KeyError, TypeError) as err:
        raise RedraftError(f"tokenizer file {str(meta_path)!r} is corrupt: {err!r}") from err
    if version != FORMAT_VERSION:
        raise RedraftError(
            f"tokenizer file {str(meta_path)!r} has format_version {version!r}; "
            f"this redraft reads version {FORMAT_VERSION}"
        )
    try:
        if kind == "char":
            tokenizer: Tokenizer = CharTokenizer(meta["chars"])
        elif kind == "byte":
            tokenizer = ByteTokenizer()
        elif kind in ("bpe", "hf"):
            backend_path = directory / BACKEND_FILE
            if not backend_path.is_file():
                raise RedraftError(f"tokenizer folder {str(directory)!r} lacks {BACKEND_FILE}")
            specials = meta["special_tokens"]
            backend = _read_backend(backend_path)
            tokenizer = BackendTokenizer(
                backend, kind, specials["eos"], specials["pad"], specials["mask"]
            )
        else:
            raise RedraftError(
                f"tokenizer file {str(meta_path)!r} has unknown kind {kind!r}: "
                f"expected one of {KINDS}"
            )
    except (KeyError, TypeError) as err:
        raise RedraftError(f"tokenizer file {str(meta_path)!r} is corrupt: {err!r}") from err
    saved = [meta.get(k) for k in ("vocab_size", "eos_id", "pad_id", "mask_id")]
    have = [tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id, tokenizer.mask_id]
    if saved != have:
        raise RedraftError(
            f"tokenizer in {str(directory)!r} does not match its {META_FILE}: vocab_size, eos, "
            f"pad, mask ids are {have}, the file says {saved}"
        )
    return tokenizer


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
