"""The simulators' control surface over HTTP, so another process can script a market.

Routes (JSON in and out, under `/_sim`):

    POST   /_sim/pause            -> {"paused": true}     every book stops moving
    POST   /_sim/resume           -> {"paused": false}
    POST   /_sim/gap              {"game_id", "venue", "cents"} -> the open gap
    DELETE /_sim/gap/{game_id}    -> {"game_id", "closed": bool}
    GET    /_sim/fair             -> {game_id: probability YES wins, ...}
    POST   /_sim/faults           {"faults": "key=value,...", "venue"?} -> the plan now in force
                                     on that venue (default both), live connections included
    GET    /_sim/tops             -> {venue: {market id: [bid, ask, bid_size, ask_size]}}
                                     true tops in ticks of $0.0001 and hundredths (None: empty side)

Errors are JSON `{"error": "..."}`: 400 for a bad body, venue or cents, 404 for an
unknown game or route, 409 when the books cannot hold the gap right now.

It is a small server of its own rather than routes on the Kalshi simulator's app:
the venue apps inject REST faults and rate limits into every request they serve,
which a test's control request must never receive, they may listen beyond
loopback (`arbees sim --allow-remote`) while the control always binds 127.0.0.1,
and they serve only what the real venues serve.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from markets.sim.gaps import GapNotPossibleError, SimControlError, UnknownGameError
from markets.sim.polymarket import PolymarketFaultPlan
from markets.sim.server import CLOSE_TIMEOUT

if TYPE_CHECKING:
    from markets.sim.venues import SimulatedVenues

CONTROL_HOST = "127.0.0.1"
CONTROL_ROOT = "/_sim"
GAP_FIELDS = ("game_id", "venue", "cents")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimControlServer:
    """Serves the routes above for one `SimulatedVenues`, on loopback only."""

    def __init__(self, venues: SimulatedVenues, port: int = 0) -> None:
        self._venues = venues
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT/_sim`: the routes are relative to it."""
        if self._port is None:
            raise RuntimeError("simulator control server not started")
        return f"http://{CONTROL_HOST}:{self._port}{CONTROL_ROOT}"

    async def start(self) -> None:
        app = web.Application(middlewares=[_json_errors])
        app.router.add_post(f"{CONTROL_ROOT}/pause", self._pause)
        app.router.add_post(f"{CONTROL_ROOT}/resume", self._resume)
        app.router.add_post(f"{CONTROL_ROOT}/gap", self._open_gap)
        app.router.add_delete(f"{CONTROL_ROOT}/gap/{{game_id}}", self._close_gap)
        app.router.add_get(f"{CONTROL_ROOT}/fair", self._fair)
        app.router.add_get(f"{CONTROL_ROOT}/tops", self._tops)
        app.router.add_post(f"{CONTROL_ROOT}/faults", self._faults)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, CONTROL_HOST, self._requested_port).start()
        except BaseException:
            await self.stop()
            raise
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _pause(self, request: web.Request) -> web.Response:
        self._venues.pause()
        return web.json_response({"paused": True})

    async def _resume(self, request: web.Request) -> web.Response:
        self._venues.resume()
        return web.json_response({"paused": False})

    async def _open_gap(self, request: web.Request) -> web.Response:
        body = await _gap_body(request)
        gap = self._venues.open_gap(body["game_id"], body["venue"], body["cents"])
        return web.json_response({"game_id": gap.game_id, "venue": gap.cheap,
                                  "other_venue": gap.rich, "cents": gap.cents})

    async def _close_gap(self, request: web.Request) -> web.Response:
        game_id = request.match_info["game_id"]
        return web.json_response({"game_id": game_id, "closed": self._venues.close_gap(game_id)})

    async def _fair(self, request: web.Request) -> web.Response:
        return web.json_response(self._venues.fairs())

    async def _tops(self, request: web.Request) -> web.Response:
        return web.json_response(self._venues.tops())

    async def _faults(self, request: web.Request) -> web.Response:
        body = await _json_object(request, 'body must be JSON like {"faults": "drop_after=300", "venue": "kalshi"}')
        unknown = sorted(set(body) - {"faults", "venue"})
        spec, venue = body.get("faults"), body.get("venue")
        if unknown or not isinstance(spec, str) or not (venue is None or isinstance(venue, str)):
            raise SimControlError('faults body needs "faults" (a key=value,... string) and optionally "venue" '
                                  f'(a string); got {sorted(body)}')
        try:
            plan = PolymarketFaultPlan.parse(spec)
        except ValueError as exc:
            raise SimControlError(str(exc)) from None
        self._venues.set_faults(plan, venue)
        return web.json_response({"venue": venue, "faults": spec})


async def _gap_body(request: web.Request) -> dict[str, Any]:
    """The gap request's JSON object, with exactly the expected fields (types of
    `cents` and the venue name are checked by the gap itself)."""
    body = await _json_object(request, 'body must be JSON like {"game_id": "...", "venue": "kalshi", "cents": 5}')
    missing = [name for name in GAP_FIELDS if name not in body]
    unknown = sorted(set(body) - set(GAP_FIELDS))
    if missing or unknown:
        raise SimControlError(f"gap body needs exactly {', '.join(GAP_FIELDS)}; "
                              f"missing {missing or 'nothing'}, unexpected {unknown or 'nothing'}")
    for name in ("game_id", "venue"):
        if not isinstance(body[name], str):
            raise SimControlError(f"{name} must be a string, got {body[name]!r}")
    return body


async def _json_object(request: web.Request, hint: str) -> dict[str, Any]:
    """The request's JSON object body; SimControlError(`hint`) if it is not JSON, naming the type if not an object."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SimControlError(hint) from None
    if not isinstance(body, dict):
        raise SimControlError(f"body must be a JSON object, got {type(body).__name__}")
    return body


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as `{"error": ...}` with the status that says whose fault it is."""
    try:
        return await handler(request)
    except UnknownGameError as exc:
        return _error(404, str(exc))
    except GapNotPossibleError as exc:
        return _error(409, str(exc))
    except SimControlError as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        return _error(exc.status, f"{request.method} {request.path}: {exc.reason}")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
