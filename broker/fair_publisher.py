"""`arbees sim --fair-feed`: the simulators' hidden fair values as a ZeroMQ feed.

The demo's model-edge signals need a probability per game from somewhere; the
simulators know the true one, so `arbees sim` can publish it in the feed format any
model would use (`shard.fair_feed`). It lives with the command, not in `markets/`,
which stays free of ZeroMQ. Every game goes out every `interval` seconds (a late
subscriber has every value within one interval) and a game whose value moved goes
out at the next check, `CHANGE_POLL` seconds at most after the move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Self

import zmq

from broker.endpoints import bind, remove_ipc_file
from broker.protocol import MAX_CONTROL_BYTES
from shard.fair_feed import FairValue, encode_fair, fair_topic

log = logging.getLogger(__name__)

SOURCE = "sim"
CHANGE_POLL = 0.05


class FairFeedPublisher:
    """`async with FairFeedPublisher(venues.fairs, endpoint) as feed:` publishes until exit.

    `fairs` returns {game_id: probability} when called. The ZeroMQ context is made
    on entry, inside the running process (never inherited across a fork or spawn);
    on exit the socket closes with linger 0 and an ipc file this publisher bound
    is removed (binding refuses an ipc path that already exists, so it is ours).
    `endpoint` is the bound endpoint once entered (a tcp `*` port resolved).
    """

    def __init__(self, fairs: Callable[[], dict[str, float]], endpoint: str, *,
                 interval: float = 0.5, allow_remote: bool = False) -> None:
        if not interval > 0:
            raise ValueError(f"fair-value interval must be > 0 seconds, got {interval!r}")
        self._fairs = fairs
        self.endpoint = endpoint
        self.interval = interval
        self._allow_remote = allow_remote
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)  # it receives subscriptions from any peer
        try:
            self.endpoint = bind(self._socket, self.endpoint, what="fair-value feed",
                                 allow_remote=self._allow_remote)
        except BaseException:
            self._close(bound=False)
            raise
        self._task = asyncio.create_task(self._publish_loop(), name="fair-feed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close(bound=True)

    def _close(self, *, bound: bool) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if bound:
            remove_ipc_file(self.endpoint)

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sent: dict[str, float] = {}
        next_all = loop.time()
        while True:
            now = loop.time()
            everything = now >= next_all
            if everything:
                next_all = now + self.interval
            try:
                self._publish(sent, everything)
            except Exception:  # a bad round must not silence the feed for the rest of the run
                log.exception("fair-value feed: publishing failed")
            await asyncio.sleep(min(CHANGE_POLL, max(next_all - loop.time(), 0.0)))

    def _publish(self, sent: dict[str, float], everything: bool) -> None:
        """Send the games whose value moved since last sent (all of them if `everything`).

        A PUB socket never blocks: a subscriber whose queue is full misses values,
        and the next periodic round brings it up to date.
        """
        assert self._socket is not None
        ts_ns = time.time_ns()
        for game_id, fair in self._fairs().items():
            if everything or sent.get(game_id) != fair:
                self._socket.send_multipart(
                    [fair_topic(game_id), encode_fair(FairValue(game_id, fair, ts_ns, SOURCE))])
                sent[game_id] = fair
