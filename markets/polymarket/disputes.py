"""How long a token's book may disagree with the venue's own best prices before it is wrong.

Every `price_change` entry carries the venue's post-change `best_bid`/`best_ask`, the
only integrity check this channel has. But the venue itself is briefly inconsistent:
after a trade sweeps a level, entries already report the post-trade best prices while
the entry removing the swept level comes a few messages later (protocols/polymarket.md
appendix). One disagreeing frame is therefore no proof of a wrong book; a disagreement
that outlasts `max_frames` frames of that token, or `max_seconds`, is.

`Disputes` keeps, per token, when its current disagreement started and how many
frames it has lasted; the caller decides what the book's status is meanwhile (it is
never LIVE while disputed: see `MarketChannel`).
"""

from __future__ import annotations

_NS = 1_000_000_000


class Disputes:
    """Open disagreements by token id: (first frame's receive time ns, frames so far)."""

    __slots__ = ("_open", "max_frames", "max_ns")

    def __init__(self, max_frames: int = 5, max_seconds: float = 2.0) -> None:
        if max_frames < 1:
            raise ValueError(f"mismatch_frames must be >= 1, got {max_frames!r}")
        if not max_seconds > 0:
            raise ValueError(f"mismatch_seconds must be > 0, got {max_seconds!r}")
        self.max_frames = max_frames
        self.max_ns = int(max_seconds * _NS)
        self._open: dict[str, tuple[int, int]] = {}

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._open

    def disagree(self, token_id: str, now_ns: int) -> bool:
        """Record one more disagreeing frame; True once the disagreement has persisted
        past the limits (the dispute is then closed: the caller resyncs the book)."""
        since, frames = self._open.get(token_id, (now_ns, 0))
        frames += 1
        if frames > self.max_frames or now_ns - since >= self.max_ns:
            del self._open[token_id]
            return True
        self._open[token_id] = (since, frames)
        return False

    def settle(self, token_id: str) -> None:
        """The book agrees again, or was replaced or dropped: nothing is in dispute."""
        self._open.pop(token_id, None)

    def expired(self, now_ns: int) -> list[str]:
        """Tokens disputed for `max_seconds` with no frame since to settle them (closed
        here; the caller resyncs them): a token that goes quiet mid-dispute."""
        if not self._open:
            return []
        limit = self.max_ns
        gone = [token for token, (since, _) in self._open.items() if now_ns - since >= limit]
        for token in gone:
            del self._open[token]
        return gone
