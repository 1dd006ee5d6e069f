"""A constraint compiled for one tokenizer: the token automaton and the set operations the
decoders need, on state sets held as Python ints (bit q set: state q is in the set).

States: the live states of the regex's byte DFA, plus END (the text has ended: EOS was written
in an accepting state). T[q, v] is the state after token v from q (-1: dead). EOS moves an
accepting state to END; from END only EOS (and pad, when it is its own id) may follow, so a
span may end early and be padded. mask, bos and every special id are dead everywhere. A span is
complete when its state is accepting or END.

Set operations (all memoised: the same sets recur across positions, rows and steps):
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
        self._memo: dict[tuple, object] = {}
        self._lock = threading.Lock()  # the memo is shared by every request of the model

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

    # --- memoised set operations -------------------------------------------------------

    def _get(self, key, make):
        memo = self._memo
        out = memo.get(key)
        if out is None:
            out = make()
            with self._lock:
                if len(memo) > _MEMO_CAP:
                    memo.clear()
                memo[key] = out
        return out

    def _col(self, v: int) -> list[int]:
        col = self._cols.get(v)
        if col is None:
            col = self._cols[v] = self.T[:, v].tolist()
        return col

    def fwd_any(self, f: int) -> int:
        def make():
            out = 0
            for q in bits(f).tolist():
                out |= self._succ[q]
            return out
        return self._get(("fa", f), make)

    def fwd_tok(self, f: int, v: int) -> int:
        def make():
            col, out = self._col(v), 0
            for q in bits(f).tolist():
                if col[q] >= 0:
                    out |= 1 << col[q]
            return out
        return self._get(("ft", f, v), make)

    def bwd_any(self, b: int) -> int:
        def make():
            out = 0
            for q in bits(b).tolist():
                out |= self._pred[q]
            return out
        return self._get(("ba", b), make)

    def bwd_tok(self, b: int, v: int) -> int:
        def make():
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
        return self._get(("bt", b, v), make)

    def allowed(self, f: int, b: int) -> torch.Tensor:
        """(V,) bool: the tokens v with T[q, v] in b for some q in f."""
        def make():
            member = np.zeros(self.n_states + 1, dtype=bool)
            member[bits(b)] = True
            return torch.from_numpy(member[self._T_idx[bits(f)]].any(axis=0))
        return self._get(("al", f, b), make)

    def ar_allowed(self, q: int, left: int) -> torch.Tensor:
        """(V,) bool: tokens after which state q can still reach an accepting state within
        `left` - 1 more tokens (left: positions remaining, this one included)."""
        left = min(left, int(self.dist.max()) + 1)

        def make():
            nxt = self._T_idx[q]
            ok = np.append(self.dist, -1)[nxt]
            return torch.from_numpy((ok >= 0) & (ok <= left - 1))
        return self._get(("ar", q, left), make)

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
    if kind == "grammar":
        raise RedraftError("grammar constraints are not supported: redraft's any-order check "
                           "needs a finite automaton (regex, JSON Schema); a context-free "
                           "grammar needs a pushdown automaton over holes, not built yet")
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
