"""Any order (masked and block diffusion, infill templates, every step rule): a position may
take only a token that keeps the canvas completable to a text of the language.

The constrained span of a row is positions lo..hi-1 of its canvas (after the prompt, before a
fixed suffix; an infill template's whole canvas). Reading the span as a chain of relations
over the automaton's states (a fixed or committed token v: q -> T[q, v]; a masked position:
q -> T[q, v] for any v), the canvas is completable iff the start state reaches an accepting
state (or END) through the chain. Per position i:

    F_i  the states reachable after positions lo..i-1   (forward, from {start})
    B_i  the states from which positions i..hi-1 reach acceptance   (backward, from accept)

and token v may go at masked position i iff T[q, v] is in B_{i+1} for some q in F_i (DINGO's
reachability, arXiv 2505.23061, as a check rather than a decoder). Each step:

1. `allow`: before the step rule draws, the logits of every free masked position get -inf on
   the tokens that fail that check (the rules themselves are unchanged).
2. `repair`: a step that commits several positions at once must be jointly consistent (each
   alone passed step 1, together they may not: "ab|ba" with two masks and "aa" drawn). A
   left-to-right sweep keeps the induction "new[..i] + old[i..] is completable": at a
   position the step changed, the new token is kept iff it reaches B_{i+1} of the OLD canvas
   from F_i of the NEW prefix; else it is replaced by the most likely token that does (one
   exists: the old canvas held a mask or a token there that did). So every canvas a row
   holds, drafts included, is completable, and a canvas without masks matches.

Sets are Python ints over the automaton's states; the set operations are memoised in the
Constraint, so a step costs a few dict look-ups per span position.
"""

from __future__ import annotations

import torch

from redraft.constraints.compile import Constraint
from redraft.errors import RedraftError


class CanvasGuard:
    """The constraint of the rows of one diffusion state: spans[r] = (lo, hi)."""

    def __init__(self, constraint: Constraint, spans: list[tuple[int, int]], mask_id: int):
        self.c, self.spans, self.mask_id = constraint, list(spans), mask_id
        self._back: dict[int, list[int]] = {}  # row -> B of the canvas `allow` saw
        self.repaired = 0  # tokens replaced by `repair` (a diagnostic)

    # --- sweeps (over interned set ids: Constraint.sets[id] is the set) ------------------

    def forward(self, toks: list[int]) -> list[int]:
        """The ids of F_lo .. F_hi over the span's tokens (mask: any token)."""
        c, mask = self.c, self.mask_id
        fa, ft = c.fa, c.ft
        f = c.start_id
        out = [f]
        for v in toks:
            if v == mask:
                nf = fa[f]
                if nf < 0:
                    nf = c.fa_id(f)
            else:
                nf = ft[f].get(v)
                if nf is None:
                    nf = c.ft_id(f, v)
            out.append(nf)
            f = nf
        return out

    def backward(self, toks: list[int]) -> list[int]:
        """The ids of B_lo .. B_hi."""
        c, mask = self.c, self.mask_id
        ba, bt = c.ba, c.bt
        b = c.accept_id
        out = [b] * (len(toks) + 1)
        for i in range(len(toks) - 1, -1, -1):
            v = toks[i]
            if v == mask:
                nb = ba[b]
                if nb < 0:
                    nb = c.ba_id(b)
            else:
                nb = bt[b].get(v)
                if nb is None:
                    nb = c.bt_id(b, v)
            out[i] = b = nb
        return out

    def completable(self, toks: list[int]) -> bool:
        return bool(self.c.sets[self.forward(toks)[-1]] & self.c.accept_set)

    def check(self, x: torch.Tensor) -> None:
        """Refuse a canvas (B, L) no completion of which matches (fixed text against the
        constraint, or a span too short). It leaves the shared memo alone: a server may
        start a request on its HTTP thread while the engine's thread steps others."""
        c = self.c
        for r, row in enumerate(x.tolist()):
            lo, hi = self.spans[r]
            f = 1 << c.start
            for v in row[lo:hi]:
                f = c.fwd_any(f) if v == self.mask_id else c.fwd_tok(f, v)
            if not f & c.accept_set:
                raise RedraftError(
                    f"the constraint cannot be met on this canvas: its span of {hi - lo} "
                    f"tokens (with the fixed text in it) has no completion that matches "
                    f"{self.c.regex[:80]!r} (it needs at least {self.c.min_tokens()} tokens): "
                    "raise max_new_tokens or fix the template")

    # --- one step ----------------------------------------------------------------------

    def allow(self, x: torch.Tensor, logits: torch.Tensor, free: torch.Tensor,
              offset: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, W, V') of the positions offset[r] .. offset[r] + W - 1 of canvas x
        (B, L) (offset None: W = L, from 0) -> a copy with -inf on the tokens each free
        masked position may not take (and on ids past the tokenizer's)."""
        c = self.c
        c.maybe_reset()  # ids stay valid from here to this step's repair
        self._back = {}
        rows = torch.nonzero(free.any(dim=1)).flatten().tolist()
        if not rows:
            return logits
        todo = (free & (x == self.mask_id)).cpu()
        xs = x.cpu().tolist()
        offs = [0] * len(xs) if offset is None else offset.tolist()
        at_r, at_c, table_rows = [], [], []
        al, allowed_row = c.al, c.allowed_row
        for r in rows:
            lo, hi = self.spans[r]
            toks = xs[r][lo:hi]
            fwd, back = self.forward(toks), self.backward(toks)
            self._back[r] = back
            off = offs[r]
            for p in torch.nonzero(todo[r, lo:hi]).flatten().tolist():
                key = (fwd[p], back[p + 1])
                row = al.get(key)
                at_r.append(r)
                at_c.append(lo + p - off)
                table_rows.append(row if row is not None else allowed_row(*key))
        if not at_r:
            return logits
        out = logits.clone()
        ri = torch.tensor(at_r, device=logits.device)
        ci = torch.tensor(at_c, device=logits.device)
        width = min(c.vocab, logits.shape[-1])
        ok = torch.zeros((len(at_r), logits.shape[-1]), dtype=torch.bool)
        ok[:, :width] = c.allowed_table()[torch.tensor(table_rows)][:, :width]
        out[ri, ci] = out[ri, ci].masked_fill(~ok.to(logits.device), -torch.inf)
        return out

    def repair(self, old: torch.Tensor, new: torch.Tensor, logits: torch.Tensor,
               offset: torch.Tensor | None = None) -> torch.Tensor:
        """The step's canvas `new` (B, L), with every token that breaks joint completability
        replaced (see the module docstring); logits: those `allow` returned."""
        changed = (old != new).any(dim=1)
        rows = [r for r in torch.nonzero(changed).flatten().tolist() if r in self._back]
        if not rows:
            return new
        c, mask = self.c, self.mask_id
        sets = c.sets
        offs = [0] * len(new) if offset is None else offset.tolist()
        olds, news = old.cpu(), new.cpu()
        fixes: list[tuple[int, int, int]] = []
        for r in rows:
            lo, hi = self.spans[r]
            before, after = olds[r, lo:hi].tolist(), news[r, lo:hi].tolist()
            back = self._back[r]
            f = c.start_id
            for i, (a, v) in enumerate(zip(before, after, strict=True)):
                if v == mask:
                    f = c.fa_id(f)
                    continue
                nxt = c.ft_id(f, v)
                if a != v and not sets[nxt] & sets[back[i + 1]]:
                    row = c.allowed_row(f, back[i + 1])  # (it may grow the table)
                    ok = c.allowed_table()[row]
                    lg = logits[r, lo + i - offs[r], :c.vocab].float().cpu()
                    v = int(lg.masked_fill(~ok[:len(lg)], -torch.inf).argmax())
                    if not ok[v]:  # every allowed logit -inf: any allowed token
                        v = int(torch.nonzero(ok).flatten()[0])
                    fixes.append((r, lo + i, v))
                    nxt = c.ft_id(f, v)
                f = nxt
        if not fixes:
            return new
        self.repaired += len(fixes)
        out = new.clone()
        for r, p, v in fixes:
            out[r, p] = v
        return out

    # --- rows of merged states (block diffusion's server groups) ---------------------------

    @classmethod
    def merge(cls, guards: list[CanvasGuard]) -> CanvasGuard:
        first = guards[0]
        return cls(first.c, [s for g in guards for s in g.spans], first.mask_id)

    def take(self, rows: torch.Tensor) -> CanvasGuard:
        return CanvasGuard(self.c, [self.spans[r] for r in rows.tolist()], self.mask_id)
