"""Named mixes of simulator faults for reliability runs (tests/runtime/test_faults.py, scripts/soak.py).

Each is a `key=value,...` spec as `arbees sim --faults` and `POST /_sim/faults` take it.

`ALL` turns on every fault both venues share, each every few hundred data frames of
a connection at most, with the connection dropped after 400. `stall_after` stays off:
on Kalshi, data stopping while pings go on cannot be told from a quiet market (the venue
layer takes Kalshi's real stall to be a dead peer, below), and on Polymarket the proof of
a stall takes a minute of silence (the client's own tests cover it).

`KALSHI_DEAD_PEER` makes Kalshi a dead peer (no data, no replies, no pings, no pongs)
after 300 frames instead of dropping the connection. It is Kalshi's alone: on
Polymarket `mute_after` is a mere stall, which its client proves only after a minute
of silence; and within one plan `mute_after` below `drop_after` means every session
ends by silence, never by a close, so runs switch Kalshi between the two.

`KALSHI_TAIL` is the Kalshi plan to end a run on before comparing books: the dead peer
and every fault but the unparseable frames. A malformed or truncated Kalshi frame
loses its update and the seq it consumed; the client learns of the loss only from the
next frame of the same sid. When it was the sid's last frame before the books stop
(the simulators paused), nothing follows, and the book stays wrong while LIVE: the
Kalshi client keeps a quiet book LIVE on the strength of a continuous seq it can no
longer see. That is a venue-layer gap (`markets/kalshi/ws_client.py` could resync
every sid of the socket on an unparseable frame); until it is closed, a run that
requires exact books at the end lets Kalshi's last frames arrive parseable.
"""

from __future__ import annotations

ALL = ("drop_after=400,skip_seq_every=150,malformed_every=97,truncated_every=89,unknown_type_every=71,"
       "wrong_type_every=113,negative_size_every=127,duplicate_every=53,snapshot_delay=0.3,"
       "refuse_handshakes=3,inconsistent_top_every=101")
KALSHI_DEAD_PEER = ALL.replace("drop_after=400", "mute_after=300")
KALSHI_TAIL = KALSHI_DEAD_PEER.replace("malformed_every=97,truncated_every=89,", "")

DEAD_PEER_REASONS = ("socket_error", "venue_ping_timeout", "receive_timeout")
"""Why a venue client's session ends when the peer goes silent: our pings unanswered (aiohttp's
heartbeat raises a socket error), the venue's own pings missing, or no frame at all."""
