"""Prometheus exposition for a role: `--metrics-port` serves `/metrics` on 127.0.0.1, inside the role's event loop.

Served by aiohttp on the role's own loop rather than by `prometheus_client`'s HTTP
thread, so that a scrape reads the role's counters on the thread that writes them
(no lock on the hot path, no dictionary changing size under a reader). The values
come from collectors over what the roles already count (`broker.role_metrics`).
Loopback only: metrics name markets and peers; a remote scraper reaches them
through whatever the operator already trusts (an SSH tunnel, a local agent).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from broker.endpoints import EndpointError

log = logging.getLogger(__name__)

METRICS_HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def serve_metrics(port: int | None, collector: Collector) -> AsyncIterator[int | None]:
    """Serve `collector` on http://127.0.0.1:PORT/metrics while inside; yields the bound port (None: off)."""
    if port is None:
        yield None
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, METRICS_HOST, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise EndpointError(f"metrics: cannot listen on {METRICS_HOST}:{port} ({exc.strerror}); choose another "
                            "--metrics-port, or 0 for any free port") from None
    bound = runner.addresses[0][1]
    log.info("metrics: serving http://%s:%d/metrics", METRICS_HOST, bound)
    try:
        yield bound
    finally:
        await runner.cleanup()
