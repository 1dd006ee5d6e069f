"""Regex -> byte-level DFA -> token transition table: the automaton every decoder consults.

interegular turns the regex into a character FSM (symbols are classes of characters, with an
`anything_else` class for every character the pattern never names). Tokens are byte strings
(a byte tokenizer's token may hold half a UTF-8 character), so that FSM is rewritten here over
bytes: ASCII characters are one byte; a multi-byte character walks a small trie of the
characters the pattern names, and any other one walks a generic "k continuation bytes left"
chain to the anything_else target. The result is deterministic and takes exactly the
well-formed UTF-8 encodings (no overlong forms, surrogates or code points past U+10FFFF), so
a byte-level row always decodes to text without replacement characters.

Then only the live states are kept (reachable from the start and able to reach an accepting
state), and each token's bytes are walked through the DFA from every state at once (numpy):
T[q, v] is the state after token v from q, -1 when the token is dead there.
"""

from __future__ import annotations

import numpy as np

from redraft.errors import RedraftError

DEAD = -1


def _cont_bytes(lead: int) -> int:
    """Continuation bytes after a UTF-8 lead byte (0: not a multi-byte lead)."""
    if 0xC2 <= lead <= 0xDF:
        return 1
    if 0xE0 <= lead <= 0xEF:
        return 2
    if 0xF0 <= lead <= 0xF4:
        return 3
    return 0


def _first_cont(lead: int) -> tuple[int, int]:
    """The range of the byte after a UTF-8 lead byte: the narrow ones rule out overlong forms,
    surrogates and code points past U+10FFFF."""
    return {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF),
            0xF4: (0x80, 0x8F)}.get(lead, (0x80, 0xBF))


def regex_fsm(pattern: str):
    """interegular's character FSM of a Python-style regex (a RedraftError when it cannot)."""
    try:
        import interegular
    except ImportError:
        raise RedraftError("constraints need interegular and outlines-core: pip install "
                           "'redraft[structured]'") from None
    try:
        return interegular.parse_pattern(pattern).to_fsm()
    except Exception as e:  # interegular raises its own types (Unsupported, InvalidSyntax, ...)
        raise RedraftError(f"regex {pattern!r} is not supported: {type(e).__name__}: {e} "
                           "(lookarounds, backreferences and anchors inside the pattern are "
                           "not regular)") from None


def byte_dfa(pattern: str) -> tuple[np.ndarray, int, np.ndarray]:
    """(delta (S, 256) int32 with -1 dead, initial state, accepting (S,) bool) of the regex,
    over UTF-8 bytes, reduced to live states (a RedraftError if the language is empty)."""
    from interegular.fsm import anything_else

    fsm = regex_fsm(pattern)
    mapping = dict(fsm.alphabet._symbol_mapping)
    else_sym = mapping.pop(anything_else, None)
    named = {c: s for c, s in mapping.items() if isinstance(c, str) and len(c) == 1}
    wide = {c.encode("utf-8"): s for c, s in named.items() if ord(c) >= 0x80}
    prefixes = {enc[:k] for enc in wide for k in range(1, len(enc))}

    index: dict[object, int] = {}
    rows: list[list[int]] = []
    accepting: list[bool] = []
    todo: list[object] = []

    def state(key) -> int:
        if key not in index:
            index[key] = len(rows)
            rows.append([DEAD] * 256)
            accepting.append(key[0] == "s" and key[1] in fsm.finals)
            todo.append(key)
        return index[key]

    def char_target(s, sym):
        nxt = fsm.map.get(s, {}).get(sym)
        return None if nxt is None else state(("s", nxt))

    start = state(("s", fsm.initial))
    while todo:
        key = todo.pop()
        row = rows[index[key]]
        if key[0] == "s":  # a character state
            s = key[1]
            else_t = fsm.map.get(s, {}).get(else_sym) if else_sym is not None else None
            for b in range(0x80):
                sym = named.get(chr(b), else_sym)
                t = char_target(s, sym) if sym is not None else None
                if t is not None:
                    row[b] = t
            for b in range(0xC2, 0xF5):
                if bytes([b]) in prefixes:
                    row[b] = state(("t", s, bytes([b])))
                elif else_t is not None:
                    row[b] = state(("g", else_t, _cont_bytes(b), *_first_cont(b)))
        elif key[0] == "t":  # inside a named multi-byte character, from character state s
            _, s, pre = key
            else_t = fsm.map.get(s, {}).get(else_sym) if else_sym is not None else None
            need = _cont_bytes(pre[0])
            lo, hi = _first_cont(pre[0]) if len(pre) == 1 else (0x80, 0xBF)
            for b in range(lo, hi + 1):
                p = pre + bytes([b])
                if p in wide:
                    t = char_target(s, wide[p])
                    if t is not None:
                        row[b] = t
                elif p in prefixes:
                    row[b] = state(("t", s, p))
                elif else_t is not None:
                    left = need - (len(p) - 1)
                    row[b] = (state(("s", else_t)) if left == 0
                              else state(("g", else_t, left, 0x80, 0xBF)))
        else:  # generic: `left` continuation bytes (the next in lo..hi), then state t
            _, t, left, lo, hi = key
            nxt = state(("s", t)) if left == 1 else state(("g", t, left - 1, 0x80, 0xBF))
            for b in range(lo, hi + 1):
                row[b] = nxt
    delta = np.array(rows, dtype=np.int32).reshape(-1, 256)
    return _live(delta, start, np.array(accepting, dtype=bool), pattern)


def _live(delta: np.ndarray, start: int, accepting: np.ndarray, pattern: str):
    """Keep the states reachable from `start` that can reach an accepting state."""
    n = len(delta)
    seen = np.zeros(n, dtype=bool)
    seen[start] = True
    frontier = [start]
    while frontier:
        nxt = np.unique(delta[frontier])
        nxt = nxt[(nxt >= 0) & ~seen[np.maximum(nxt, 0)]]
        seen[nxt] = True
        frontier = nxt.tolist()
    good = accepting.copy()
    while True:
        ok = np.where(delta >= 0, good[np.maximum(delta, 0)], False).any(axis=1) | good
        if (ok == good).all():
            break
        good = ok
    live = seen & good
    if not live[start]:
        raise RedraftError(f"regex {pattern!r} matches no string: nothing can satisfy it")
    new = np.full(n + 1, DEAD, dtype=np.int32)  # new[-1] (index n) maps dead to dead
    new[np.flatnonzero(live)] = np.arange(int(live.sum()), dtype=np.int32)
    out = new[delta[live]]  # -1 indexes new[n] = DEAD
    return out, int(new[start]), accepting[live]


def token_table(delta: np.ndarray, tokens: list[bytes | None]) -> np.ndarray:
    """T (S, V) int32: the state after each token's bytes from each state (-1: dead there, or
    a token with no text, None). Tokens of one length are walked together."""
    n = len(delta)
    padded = np.vstack([delta, np.full((1, 256), n, dtype=np.int32)])  # row n: dead
    padded[padded == DEAD] = n
    out = np.full((n, len(tokens)), DEAD, dtype=np.int32)
    by_len: dict[int, list[int]] = {}
    for v, tok in enumerate(tokens):
        if tok:  # None (special) and b"" (no text) never move
            by_len.setdefault(len(tok), []).append(v)
    states = np.arange(n, dtype=np.int32)[:, None]
    for k, ids in by_len.items():
        arr = np.frombuffer(b"".join(tokens[v] for v in ids), dtype=np.uint8).reshape(-1, k)
        q = np.broadcast_to(states, (n, len(ids)))
        for j in range(k):
            q = padded[q, arr[:, j][None, :]]
        out[:, ids] = np.where(q == n, DEAD, q)
    return out
