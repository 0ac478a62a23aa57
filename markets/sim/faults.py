"""Fault injection for the simulators: what can go wrong on a venue connection.

A `FaultPlan` is configuration (all faults off by default); a `FaultState` is
the per-connection counter that turns the plan into a decision for each data
frame.  Keeping the decision here, and the venue-specific way of corrupting a
frame in each venue server, means both simulators count frames identically.

Replacing faults (malformed, truncated, wrong type, negative size) take the
place of the real frame, so the real update is lost exactly as on a bad wire;
accompanying faults (unknown type, duplicate) are sent in addition to it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields


@dataclass
class FaultPlan:
    """Which faults to inject; every field off by default.

    Counts are of data frames (book snapshots/updates, tickers, trades) on one
    connection, starting at 1; `*_every=N` hits frames N, 2N, 3N, ...
    `skip_seq_every` and `terminal_error_every` (Kalshi ends the frame's
    subscription with error 17, one of the codes after which a client must
    resubscribe) have no Polymarket counterpart and are ignored there.

    `stall_after=N` stops data after N frames while the connection otherwise
    works (pings answered, commands replied to); `mute_after=N` (Kalshi) makes it
    a black hole after N data frames: no data, no replies, no pings, no pongs, as
    a peer that died without closing (on Polymarket it only stops data, like
    `stall_after`). `refuse_handshakes` refuses that many
    handshakes with HTTP `refuse_status` (503 by default; 403 and 429 are what a
    CDN in front of a public feed answers).
    """

    drop_after: int | None = None
    skip_seq_every: int | None = None
    stall_after: int | None = None
    mute_after: int | None = None
    malformed_every: int | None = None
    truncated_every: int | None = None
    unknown_type_every: int | None = None
    wrong_type_every: int | None = None
    negative_size_every: int | None = None
    duplicate_every: int | None = None
    terminal_error_every: int | None = None
    snapshot_delay: float = 0.0
    refuse_handshakes: int = 0
    refuse_status: int = 503
    rest_429_every: int | None = None
    rest_5xx_every: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "snapshot_delay":
                if not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"fault {f.name} must be a number >= 0, got {value!r}")
            elif f.name == "refuse_status":
                if not isinstance(value, int) or isinstance(value, bool) or not 400 <= value <= 599:
                    raise ValueError(f"fault {f.name} must be an HTTP error status (400-599), got {value!r}")
            elif f.name == "refuse_handshakes":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"fault {f.name} must be an integer >= 0, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"fault {f.name} must be an integer >= 1 or None, got {value!r}")

    @property
    def frame_faults_enabled(self) -> bool:
        """True when any per-frame fault is on (lets the hot path skip counting)."""
        return any(getattr(self, name) is not None for name in _FRAME_FIELDS)

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Parse "drop_after=500,malformed_every=100,snapshot_delay=0.5" (empty = no faults)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, int | float] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not raw:
                raise ValueError(f"fault {item!r} must be key=value")
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(sorted(known))}")
            try:
                values[key] = float(raw) if key == "snapshot_delay" else int(raw)
            except ValueError:
                kind = "a number" if key == "snapshot_delay" else "an integer"
                raise ValueError(f"fault {key} must be {kind}, got {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]


_FRAME_FIELDS = ("drop_after", "skip_seq_every", "stall_after", "mute_after", "malformed_every",
                 "truncated_every", "unknown_type_every", "wrong_type_every",
                 "negative_size_every", "duplicate_every", "terminal_error_every")


class Corruption(enum.Enum):
    """A fault that replaces the real frame."""

    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    WRONG_TYPE = "wrong_type"
    NEGATIVE_SIZE = "negative_size"


@dataclass(frozen=True, slots=True)
class FrameFaults:
    """The decision for one data frame."""

    stalled: bool = False          # do not send it (nor anything after)
    skip_seq: bool = False         # jump the sequence number by one extra
    replace: Corruption | None = None
    unknown_type: bool = False     # also send a frame of an unknown type
    duplicate: bool = False        # send the frame twice
    terminal_error: bool = False   # end the frame's subscription instead of sending it
    drop_after_send: bool = False  # close the connection once it is written


NO_FAULTS = FrameFaults()
_STALLED = FrameFaults(stalled=True)


@dataclass
class FaultState:
    """A connection's view of the plan: counts its data frames."""

    plan: FaultPlan = field(default_factory=FaultPlan)
    frames: int = 0

    def __post_init__(self) -> None:
        self._active = self.plan.frame_faults_enabled

    def reset(self, plan: FaultPlan) -> None:
        """Switch to a new plan mid-connection; counting restarts from zero."""
        self.plan = plan
        self.frames = 0
        self._active = plan.frame_faults_enabled

    @property
    def muted(self) -> bool:
        """Whether the connection has gone silent both ways (`mute_after`)."""
        return self.plan.mute_after is not None and self.frames >= self.plan.mute_after

    def next_frame(self) -> FrameFaults:
        """Decide the fate of the next data frame (call once per frame, in send order)."""
        if not self._active:
            return NO_FAULTS
        p = self.plan
        if (p.stall_after is not None and self.frames >= p.stall_after) or self.muted:
            return _STALLED
        self.frames += 1
        n = self.frames
        replace = None
        for every, corruption in ((p.malformed_every, Corruption.MALFORMED),
                                  (p.truncated_every, Corruption.TRUNCATED),
                                  (p.wrong_type_every, Corruption.WRONG_TYPE),
                                  (p.negative_size_every, Corruption.NEGATIVE_SIZE)):
            if _hits(every, n):
                replace = corruption
                break
        faults = FrameFaults(
            skip_seq=_hits(p.skip_seq_every, n),
            replace=replace,
            unknown_type=_hits(p.unknown_type_every, n),
            duplicate=_hits(p.duplicate_every, n),
            terminal_error=_hits(p.terminal_error_every, n),
            drop_after_send=p.drop_after is not None and n >= p.drop_after,
        )
        return NO_FAULTS if faults == NO_FAULTS else faults


class Countdown:
    """Server-wide counters for faults that are not per connection.

    Handshake refusals count attempts since the plan was set; REST faults count
    requests, so `rest_5xx_every=3` fails requests 3, 6, 9, ...
    """

    def __init__(self) -> None:
        self.handshakes = 0
        self.rest_requests = 0

    def refuse_handshake(self, plan: FaultPlan) -> bool:
        self.handshakes += 1
        return self.handshakes <= plan.refuse_handshakes

    def rest_fault(self, plan: FaultPlan) -> int | None:
        """The HTTP status to answer this REST request with instead, if any."""
        self.rest_requests += 1
        n = self.rest_requests
        if _hits(plan.rest_429_every, n):
            return 429
        if _hits(plan.rest_5xx_every, n):
            return 503 if (n // (plan.rest_5xx_every or 1)) % 2 else 500
        return None


def malformed_text(frame: str) -> str:
    """The frame made invalid JSON (a trailing comma before the last brace)."""
    return frame[:-1] + ",}" if frame.endswith("}") else frame + "}"


def truncated_text(frame: str) -> str:
    """The frame cut off mid-way, as a broken proxy or writer would leave it."""
    return frame[: max(1, len(frame) // 2)]


def _hits(every: int | None, n: int) -> bool:
    return every is not None and n % every == 0
