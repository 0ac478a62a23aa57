"""The one backoff rule shared by the REST retries and the WebSocket reconnects."""

from __future__ import annotations

import random

from markets.backoff import backoff_delay


def test_backoff_is_exponential_capped_jittered_and_safe_for_huge_attempts() -> None:
    rng = random.Random(3)
    for attempt, ceiling in ((0, 0.1), (1, 0.2), (3, 0.8), (10, 5.0), (10**6, 5.0)):
        delays = [backoff_delay(attempt, 0.1, 5.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not constant
