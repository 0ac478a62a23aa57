"""Exponential backoff with jitter, the one rule every retry loop here follows.

Jitter keeps many clients that lost the venue at the same moment from coming back
in lockstep; the exponent is capped so that a connection retrying for days never
computes an absurd power before the ceiling applies.
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 32


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): uniform in [ceiling / 2, ceiling]."""
    ceiling = min(maximum, initial * 2 ** min(attempt, _MAX_EXPONENT))
    return (rng or random).uniform(ceiling / 2, ceiling)
