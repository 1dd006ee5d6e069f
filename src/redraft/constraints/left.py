"""Left to right (the AR twin): each row's automaton state advances with every drawn token;
before a draw, the tokens that would leave the row unable to finish within the positions left
get probability 0 (the remaining-length check makes a row that reaches its length end in an
accepting state: a span may end early with EOS, then only EOS follows)."""

from __future__ import annotations

import torch

from redraft.constraints.compile import Constraint
from redraft.errors import RedraftError


class ARGuard:
    """The automaton state of each row of one AR request; `left`: positions the row may
    still write (n rows of a span of `room` tokens)."""

    def __init__(self, constraint: Constraint, n: int, room: int):
        if constraint.min_tokens() > room:
            raise RedraftError(f"the constraint needs at least {constraint.min_tokens()} tokens; "
                               f"the canvas leaves {room}: raise max_new_tokens")
        self.c = constraint
        self.q = [constraint.start] * n
        self.left = [room] * n

    def mask(self, logits: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
        """logits (R, W) of the live rows (all rows when live is None) -> a copy with the
        tokens each row may not draw at -inf (W >= the tokenizer's ids: wider logits are
        padding ids, never allowed)."""
        rows = range(len(self.q)) if live is None else torch.nonzero(live).flatten().tolist()
        allowed = torch.stack([self.c.ar_allowed(self.q[r], self.left[r]) for r in rows])
        out = torch.full_like(logits, -torch.inf)
        v = allowed.shape[1]
        out[:, :v] = logits[:, :v].masked_fill(~allowed.to(logits.device), -torch.inf)
        return out

    def advance(self, tokens: torch.Tensor, live: torch.Tensor | None = None) -> None:
        """The drawn tokens (R,) of the live rows move their states."""
        rows = range(len(self.q)) if live is None else torch.nonzero(live).flatten().tolist()
        for r, v in zip(rows, tokens.tolist(), strict=True):
            self.follow(r, [v])

    def follow(self, r: int, tokens: list[int]) -> None:
        """Row r's state after these tokens, committed in order (a speculative call commits
        several)."""
        for v in tokens:
            nxt = int(self.c.T[self.q[r], v]) if v < self.c.vocab else -1
            if nxt < 0:
                raise RedraftError(f"constraint broken: token {v} drawn in state {self.q[r]} "
                                   "(a bug: the draw was not masked)")
            self.q[r] = nxt
            self.left[r] -= 1
