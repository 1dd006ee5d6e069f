"""A constraint compiled for one tokenizer: the token automaton and the set operations the
decoders need, on state sets held as Python ints (bit q set: state q is in the set).

States: the live states of the regex's byte DFA, plus END (the text has ended: EOS was written
in an accepting state). T[q, v] is the state after token v from q (-1: dead). EOS moves an
accepting state to END; from END only EOS (and pad, when it is its own id) may follow, so a
span may end early and be padded. mask, bos and every special id are dead everywhere. A span is
complete when its state is accepting or END.

Set operations (the guards use them memoised on interned sets, `*_id`: the same sets recur
across positions, rows and steps, so a position costs a list or dict look-up):
    fwd_any(F)      states one token (any) after F        (a masked position, read forward)
    fwd_tok(F, v)   states token v leads F to
    bwd_any(B)      states from which one token reaches B (a masked position, read backward)
    bwd_tok(B, v)   states from which token v reaches B
    allowed(F, B)   (V,) bool: tokens v with T[q, v] in B for some q in F
    ar_allowed(q, r) (V,) bool: tokens after which state q can still finish in r - 1 tokens
"""

from __future__ import annotations

import json
import threading

import numpy as np
import torch

from redraft.constraints.automaton import DEAD, byte_dfa, token_table
from redraft.constraints.schema import OBJECT_SCHEMA, schema_regex
from redraft.constraints.tokens import token_bytes
from redraft.errors import RedraftError

MAX_TABLE = 200_000_000  # states x vocabulary entries of T (int32): 800 MB
_MEMO_CAP = 200_000  # entries per memo before it is cleared


def bits(x: int) -> np.ndarray:
    """The members of a set held as an int, ascending (int64 indices)."""
    if not x:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(x.to_bytes((x.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little"))


def as_int(mask: np.ndarray) -> int:
    """A bool array as a set int."""
    return int.from_bytes(np.packbits(mask.astype(bool), bitorder="little").tobytes(), "little")


class Constraint:
    """The token automaton of one constraint for one tokenizer (see the module docstring)."""

    def __init__(self, spec: dict, regex: str, tokenizer):
        self.spec, self.regex = spec, regex
        delta, start, accepting = byte_dfa(regex)
        tokens = token_bytes(tokenizer)
        s, v = len(delta), len(tokens)
        if (s + 1) * v > MAX_TABLE:
            raise RedraftError(f"the constraint's automaton has {s} states: with a vocabulary "
                               f"of {v} its token table is too large; simplify the pattern")
        self.vocab, self.end, self.start = v, s, start
        self.eos_id = tokenizer.eos_id
        table = np.full((s + 1, v), DEAD, dtype=np.int32)
        table[:s] = token_table(delta, tokens)
        table[:s, self.eos_id] = np.where(accepting, s, DEAD)
        table[s, self.eos_id] = s
        pad = tokenizer.pad_id
        if pad not in (tokenizer.mask_id, self.eos_id, getattr(tokenizer, "bos_id", None)):
            table[s, pad] = s
        self.T = table  # (S + 1, V) int32, -1 dead
        self.accept = np.append(accepting, True)  # (S + 1,) bool: END accepts
        self.accept_set = as_int(self.accept)
        self.n_states = s + 1
        # index S + 1 is a sink outside every set, for vectorised lookups of dead entries
        self._T_idx = np.where(table < 0, s + 1, table)
        self._succ = [as_int(np.bincount(r[r >= 0], minlength=s + 1) > 0) for r in table]
        pred = [0] * (s + 1)
        for q, row in enumerate(table):
            for q2 in np.unique(row[row >= 0]).tolist():
                pred[q2] |= 1 << q
        self._pred = pred
        self.dist = self._distances()
        if self.dist[start] < 0:
            raise RedraftError(f"constraint {regex!r}: no text of this tokenizer's tokens "
                               "matches it")
        self._cols: dict[int, list[int]] = {}
        self._inv: dict[int, dict[int, int]] = {}
        self._lock = threading.Lock()  # the memo is shared by every request of the model
        self._ar: dict[tuple[int, int], torch.Tensor] = {}
        self.reset()

    def _distances(self) -> np.ndarray:
        """(S + 1,) the fewest tokens from each state to an accepting one (-1: none)."""
        dist = np.where(self.accept, 0, -1)
        frontier = self.accept_set
        d = 0
        while frontier:
            d += 1
            new = 0
            for q2 in bits(frontier).tolist():
                new |= self._pred[q2]
            fresh = bits(new)
            fresh = fresh[dist[fresh] < 0]
            dist[fresh] = d
            frontier = as_int(np.isin(np.arange(len(dist)), fresh))
        return dist

    def min_tokens(self) -> int:
        """The fewest tokens a matching text takes."""
        return int(self.dist[self.start])

    # --- set operations on ints (plain, for tests and one-off checks) ------------------

    def _col(self, v: int) -> list[int]:
        col = self._cols.get(v)
        if col is None:
            col = self._cols[v] = self.T[:, v].tolist()
        return col

    def fwd_any(self, f: int) -> int:
        out = 0
        for q in bits(f).tolist():
            out |= self._succ[q]
        return out

    def fwd_tok(self, f: int, v: int) -> int:
        if not 0 <= v < self.vocab:
            return 0
        col, out = self._col(v), 0
        for q in bits(f).tolist():
            if col[q] >= 0:
                out |= 1 << col[q]
        return out

    def bwd_any(self, b: int) -> int:
        out = 0
        for q in bits(b).tolist():
            out |= self._pred[q]
        return out

    def bwd_tok(self, b: int, v: int) -> int:
        if not 0 <= v < self.vocab:
            return 0
        inv = self._inv.get(v)
        if inv is None:
            inv = {}
            for q, q2 in enumerate(self._col(v)):
                if q2 >= 0:
                    inv[q2] = inv.get(q2, 0) | (1 << q)
            self._inv[v] = inv
        out = 0
        for q in bits(b).tolist():
            out |= inv.get(q, 0)
        return out

    def allowed(self, f: int, b: int) -> torch.Tensor:
        """(V,) bool: the tokens v with T[q, v] in b for some q in f."""
        row = self.allowed_row(self.intern(f), self.intern(b))  # (it may grow the table)
        return self.allowed_table()[row]

    # --- the same, memoised on interned sets (what the guards use per position) -------

    def reset(self) -> None:
        """Forget every interned set (between steps, when the memo has grown too large)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self.sets: list[int] = []  # id -> set
        self._ids: dict[int, int] = {}  # set -> id
        self.fa: list[int] = []  # id -> id of fwd_any (-1: not yet)
        self.ba: list[int] = []
        self.ft: list[dict[int, int]] = []  # id -> {token: id of fwd_tok}
        self.bt: list[dict[int, int]] = []
        self.al: dict[tuple[int, int], int] = {}  # (forward id, backward id) -> table row
        self._table = torch.zeros((64, self.vocab), dtype=torch.bool)
        self.sets += [1 << self.start, self.accept_set]
        self._ids.update({1 << self.start: 0, self.accept_set: 1})
        self.fa += [-1, -1]
        self.ba += [-1, -1]
        self.ft += [{}, {}]
        self.bt += [{}, {}]
        self.start_id, self.accept_id = 0, 1

    def maybe_reset(self) -> None:
        if len(self.sets) > _MEMO_CAP or len(self.al) > _MEMO_CAP // 8:
            self.reset()

    def intern(self, s: int) -> int:
        i = self._ids.get(s)
        if i is None:
            with self._lock:
                i = self._ids[s] = len(self.sets)
                self.sets.append(s)
                self.fa.append(-1)
                self.ba.append(-1)
                self.ft.append({})
                self.bt.append({})
        return i

    def fa_id(self, i: int) -> int:
        j = self.fa[i]
        if j < 0:
            j = self.fa[i] = self.intern(self.fwd_any(self.sets[i]))
        return j

    def ba_id(self, i: int) -> int:
        j = self.ba[i]
        if j < 0:
            j = self.ba[i] = self.intern(self.bwd_any(self.sets[i]))
        return j

    def ft_id(self, i: int, v: int) -> int:
        j = self.ft[i].get(v)
        if j is None:
            j = self.ft[i][v] = self.intern(self.fwd_tok(self.sets[i], v))
        return j

    def bt_id(self, i: int, v: int) -> int:
        j = self.bt[i].get(v)
        if j is None:
            j = self.bt[i][v] = self.intern(self.bwd_tok(self.sets[i], v))
        return j

    def allowed_row(self, fid: int, bid: int) -> int:
        """The row of allowed_table() holding the tokens allowed between F = sets[fid] and
        B = sets[bid]."""
        key = (fid, bid)
        row = self.al.get(key)
        if row is None:
            member = np.zeros(self.n_states + 1, dtype=bool)
            member[bits(self.sets[bid])] = True
            ok = member[self._T_idx[bits(self.sets[fid])]].any(axis=0)
            row = len(self.al)
            if row == len(self._table):  # grow by doubling: one gather reads many rows
                self._table = torch.cat((self._table, torch.zeros_like(self._table)))
            self._table[row] = torch.from_numpy(ok)
            self.al[key] = row
        return row

    def allowed_table(self) -> torch.Tensor:
        return self._table

    def ar_allowed(self, q: int, left: int) -> torch.Tensor:
        """(V,) bool: tokens after which state q can still reach an accepting state within
        `left` - 1 more tokens (left: positions remaining, this one included)."""
        left = min(left, int(self.dist.max()) + 1)
        out = self._ar.get((q, left))
        if out is None:
            ok = np.append(self.dist, -1)[self._T_idx[q]]
            out = self._ar[(q, left)] = torch.from_numpy((ok >= 0) & (ok <= left - 1))
        return out

    def matches(self, ids) -> bool:
        """Whether a whole span of token ids is complete text of the language (EOS ends it;
        after EOS only EOS / pad)."""
        f = 1 << self.start
        for v in ids:
            f = self.fwd_tok(f, int(v))
            if not f:
                return False
        return bool(f & self.accept_set)


def spec_regex(spec) -> str:
    """The regex of a constraint spec (a RedraftError for a bad spec)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise RedraftError(f"constraint {spec!r}: expected a dict with a 'type': "
                           "{'type': 'regex', 'pattern': ...}, {'type': 'json_schema', "
                           "'schema': {...}} or {'type': 'json_object'}")
    kind = spec["type"]
    if kind == "grammar":
        raise RedraftError("grammar constraints are not supported: redraft's any-order check "
                           "needs a finite automaton (regex, JSON Schema); a context-free "
                           "grammar needs a pushdown automaton over holes, not built yet")
    extra = sorted(set(spec) - {"type", "pattern", "schema"})
    if extra:
        raise RedraftError(f"constraint: unknown field {extra[0]!r} (expected type, pattern "
                           "or schema)")
    if kind == "regex":
        pattern = spec.get("pattern")
        if not isinstance(pattern, str):
            raise RedraftError("constraint type 'regex' needs 'pattern': a string")
        return pattern
    if kind == "json_schema":
        return schema_regex(spec.get("schema"))
    if kind == "json_object":
        return schema_regex(OBJECT_SCHEMA)
    raise RedraftError(f"constraint type {kind!r}: expected 'regex', 'json_schema' or "
                       "'json_object'")


_CACHE: dict[tuple[str, int], tuple[object, Constraint]] = {}
_CACHE_CAP = 64
_CACHE_LOCK = threading.Lock()


def canonical(spec) -> str:
    try:
        return json.dumps(spec, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise RedraftError(f"constraint: not JSON-serialisable: {e}") from None


def compile_constraint(spec: dict, tokenizer) -> Constraint:
    """The Constraint of `spec` for `tokenizer`, cached per (canonical spec, tokenizer)."""
    key = (canonical(spec), id(tokenizer))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    out = Constraint(spec, spec_regex(spec), tokenizer)
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_CAP:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (tokenizer, out)  # the tokenizer is held, so its id stays its own
    return out


def text_matches(spec: dict, text: str) -> bool:
    """Whether `text` is in the constraint's language (the same automaton the decoders use,
    over the text's UTF-8 bytes): what a benchmark scores validity with."""
    from redraft.data.tokenizers import ByteTokenizer

    tok = _BYTES[0] if _BYTES else _BYTES.append(ByteTokenizer()) or _BYTES[0]
    return compile_constraint(spec, tok).matches(list(text.encode("utf-8")))


_BYTES: list = []  # one ByteTokenizer, so text_matches hits the compile cache

