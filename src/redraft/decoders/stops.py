"""Stop strings, matched in time linear in the text a row produces.

A row's committed text grows a few tokens at a time, and after each growth two questions are
asked of it: does it hold a stop string yet (the engine then stops the row), and how much of
its end could still turn into one (a stream holds those characters back until the next token
decides). Asked naively, both re-read the whole text against every prefix of every stop string
each time (O(text x stops^2): four stop strings of 250,000 characters stalled a server). Here:

- IncrementalText decodes only the ids that arrived since the last look, inside a small window
  of the ids before them (a tokenizer may need a few ids to finish a character: byte-level
  UTF-8, BPE merges), so a row's whole text costs O(length) to decode, not O(length^2).
- StopMatcher is an Aho-Corasick automaton over the stop strings: each new character moves it
  one state (amortised O(1)); the state's depth is the longest end of the text that is a
  prefix of some stop string, which is exactly what a stream must hold back, and its output is
  the longest stop string ending at that character.

The earliest-starting stop string wins (the text is cut where it begins), as str.find over
the whole text would answer, whatever order the matches complete in.

Requests bound the stop strings (check_stops): at most MAX_STOPS of at most MAX_STOP_CHARS
characters each, so the automaton has at most MAX_STOPS x MAX_STOP_CHARS states.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence

from redraft.errors import RedraftError

MAX_STOPS = 4  # OpenAI's bound
MAX_STOP_CHARS = 1000  # far past any real stop sequence; bounds the automaton (4,000 states)
WINDOW = 32  # ids decoded together at most: past it, an unfinished character is let through


def check_stops(stop: str | Sequence[str] | None) -> list[str]:
    """The request's stop strings as a list; a RedraftError (a 400) names a bad one."""
    found = [stop] if isinstance(stop, str) else list(stop or [])
    if len(found) > MAX_STOPS:
        raise RedraftError(f"stop: {len(found)} strings; expected at most {MAX_STOPS}")
    for i, s in enumerate(found):
        if not s:
            raise RedraftError(f"stop[{i}] is empty: expected up to {MAX_STOPS} non-empty "
                               "strings")
        if len(s) > MAX_STOP_CHARS:
            raise RedraftError(f"stop[{i}] is {len(s):,} characters; expected at most "
                               f"{MAX_STOP_CHARS:,}")
    return found


class StopMatcher:
    """Text fed in pieces; `found`: where the earliest-starting stop string begins (None: none
    yet); `held`: how many characters at the end could begin one."""

    def __init__(self, stops: Sequence[str]):
        # One automaton per set of stop strings, shared: a request's rows (up to 64) and its
        # reply's choices each keep only a state, and building it runs once.
        self._goto, self._fail, self._depth, self._out = _automaton(tuple(stops))
        self.state = 0
        self.length = 0  # characters fed
        self.found: int | None = None

    def feed(self, text: str) -> int | None:
        """Read `text` (the next characters); returns `found`."""
        goto, fail, out = self._goto, self._fail, self._out
        state, pos, found = self.state, self.length, self.found
        for ch in text:
            while state and ch not in goto[state]:
                state = fail[state]
            state = goto[state].get(ch, 0)
            pos += 1
            if out[state] and (found is None or pos - out[state] < found):
                found = pos - out[state]
        self.state, self.length, self.found = state, pos, found
        return found

    @property
    def held(self) -> int:
        return self._depth[self.state]


@functools.lru_cache(maxsize=64)
def _automaton(stops: tuple[str, ...]) -> tuple[list, list, list, list]:
    """Aho-Corasick tables: goto (per node, char -> node), fail (the node of the longest proper
    suffix that is also a path from the root), depth, out (the longest stop string ending at
    the node, through fail links too; 0: none)."""
    goto: list[dict[str, int]] = [{}]
    depth, out = [0], [0]  # out: the longest stop string ending at the node (0: none)
    for s in stops:
        node = 0
        for ch in s:
            if ch not in goto[node]:
                goto.append({})
                depth.append(depth[node] + 1)
                out.append(0)
                goto[node][ch] = len(goto) - 1
            node = goto[node][ch]
        out[node] = len(s)
    fail = [0] * len(goto)
    queue = deque(goto[0].values())
    while queue:  # breadth first: a node's failure link is shallower, so already known
        node = queue.popleft()
        out[node] = max(out[node], out[fail[node]])
        for ch, child in goto[node].items():
            f = fail[node]
            while f and ch not in goto[f]:
                f = fail[f]
            fail[child] = goto[f][ch] if node and ch in goto[f] else 0
            queue.append(child)
    return goto, fail, depth, out


class IncrementalText:
    """The text of a growing run of token ids, decoding only the newest ones.

    Ids after `settled` are pending: decoded with the last settled group before them as
    context (a BPE decoder may render a token differently alone, e.g. its leading space), until
    their decode ends in a whole character (a byte-level tokenizer's partial UTF-8 decodes as
    U+FFFD, which a later id may complete). The whole characters of a pending run are shown at
    once; the ids settle when nothing is left unfinished. `ends[k]`: the text's length once id
    k settled (ids settling together get the group's start but the last, which gets its end,
    so a token's text offset is ends[k - 1])."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.text = ""
        self.ends: list[int] = []
        self._ctx = 0  # ids[_ctx:settled]: the context the pending ids are decoded after
        self.settled = 0
        self._shown = 0  # characters of the pending ids' text already in self.text

    def extend(self, ids: Sequence[int], final: bool = False) -> str:
        """Append `ids`; returns the text that became final. final: settle everything (the
        row is done)."""
        self.ids.extend(ids)
        if self.settled == len(self.ids):
            return ""
        before = self.decode(self.ids[self._ctx:self.settled])
        now = self.decode(self.ids[self._ctx:])
        forced = final or len(self.ids) - self._ctx > WINDOW
        if not now.startswith(before):  # the context itself decodes otherwise now: wait
            if not forced:
                return ""
            now = before + now  # best effort (no tokenizer here does this)
        clean = forced or not now.endswith("\ufffd")
        shown = now if clean else now.rstrip("\ufffd")
        new = shown[len(before) + self._shown:]
        start = len(self.text) - self._shown  # where the pending ids' text begins
        self.text += new
        self._shown += len(new)
        if clean:
            group = len(self.ids) - self.settled
            self.ends += [start] * (group - 1) + [len(self.text)]
            self._ctx, self.settled, self._shown = self.settled, len(self.ids), 0
        return new


class StopScan:
    """One row's committed text and its stop strings: feed the row's committed ids (all of
    them each time, or a tensor view; only the ones not yet seen are read)."""

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str]):
        self.text = IncrementalText(decode)
        self.matcher = StopMatcher(stops)

    def feed(self, ids, final: bool = False) -> bool:
        """`ids`: the row's committed ids so far (a list or 1-D tensor). Whether the text holds
        a stop string."""
        new = ids[len(self.text.ids):]
        new = new.tolist() if hasattr(new, "tolist") else list(new)
        self.matcher.feed(self.text.extend(new, final))
        return self.matcher.found is not None

    @property
    def found(self) -> int | None:
        return self.matcher.found

    def visible(self) -> str:
        """The part of the text the final text surely starts with: up to the first stop
        string, and short of an end that a later token could complete into one (even after a
        stop: an earlier-starting, longer stop string could still complete)."""
        m, text = self.matcher, self.text.text
        end = len(text) - m.held
        return text[:end if m.found is None else min(m.found, end)]
