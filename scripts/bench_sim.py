"""Sustained message rate of one simulator process, as seen by one plain client.

The simulator runs in its own process (so it has a core to itself, as in a load
run) with a rate far above what it can serve; the driver then runs flat out and
skips the backlog it cannot keep up with.  One aiohttp client in this process
subscribes to every market's book and counts the text frames (and, for
Polymarket, the events inside them) that arrive during a fixed window after a
warm-up.  The figure measures the simulator only while it, not the client, is
the busy side: both processes' CPU shares are printed so you can tell.

    python scripts/bench_sim.py [--venue kalshi|polymarket|both] [--markets 20]
                                [--rate 5000] [--warmup 1] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchstats import print_settings
from markets.kalshi.auth import KalshiCredentials
from markets.sim.keys import generate_demo_keypair
from markets.sim.universe import build_universe

KALSHI_WS_PATH = "/trade-api/ws/v2"
STARTUP_TIMEOUT = 30.0


def _serve(venue: str, markets: int, rate: float, key: tuple[str, bytes] | None,
           port_out: Connection, stop: Event) -> None:
    """Child process: run one simulator until `stop` is set; report its port first."""
    from markets.sim.kalshi import KalshiSimulator
    from markets.sim.polymarket import PolymarketSimulator
    from markets.sim.sendlog import SendLog

    async def main() -> None:
        universe = build_universe(markets, seed=1)
        # A small ring: the bench is about throughput, not latency records.
        log = SendLog(maxlen=10_000)
        sim: Any
        if venue == "kalshi":
            sim = KalshiSimulator(universe, rate=rate, seed=1, send_log=log, rate_limit=None)
            assert key is not None
            sim.register_key(*key)
        else:
            sim = PolymarketSimulator(universe, rate=rate, seed=1, send_log=log)
        async with sim:
            port_out.send(sim.port)
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _count(url: str, headers: dict[str, str], subscribe: dict[str, Any], ping_text: str | None,
                 count_events: bool, sim_pid: int, warmup: float,
                 duration: float) -> tuple[int, int, float, float]:
    """(frames, events, client CPU s, simulator CPU s) during the measuring window.

    Kalshi sends one message per frame, so its frames are only counted; a
    Polymarket frame may batch several events, so those are parsed and counted.
    """
    frames = events = 0
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=headers, max_msg_size=0) as ws:
            await ws.send_str(orjson.dumps(subscribe).decode())
            loop = asyncio.get_running_loop()
            start = loop.time() + warmup
            end = start + duration
            last_ping = loop.time()
            cpu_start = sim_cpu_start = 0.0
            measuring = False
            while (now := loop.time()) < end:
                if ping_text is not None and now - last_ping > 5:
                    await ws.send_str(ping_text)
                    last_ping = now
                msg = await asyncio.wait_for(ws.receive(), timeout=5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"connection ended early: {msg.type} {msg.data!r}")
                if now < start:
                    continue
                if not measuring:
                    measuring = True
                    cpu_start, sim_cpu_start = time.process_time(), _cpu_seconds(sim_pid)
                frames += 1
                if not count_events:
                    events += 1
                    continue
                payload = orjson.loads(msg.data) if msg.data != "PONG" else None
                if isinstance(payload, list):
                    events += len(payload)
                elif isinstance(payload, dict):
                    events += len(payload.get("price_changes", ())) or 1
            return (frames, events, time.process_time() - cpu_start,
                    _cpu_seconds(sim_pid) - sim_cpu_start)


def run(venue: str, markets: int, rate: float, warmup: float, duration: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    key: tuple[str, bytes] | None = None
    credentials: KalshiCredentials | None = None
    headers: dict[str, str] = {}
    if venue == "kalshi":
        with tempfile.TemporaryDirectory() as tmp:
            key_id, path, public_pem = generate_demo_keypair(Path(tmp))
            credentials = KalshiCredentials.from_files(key_id, path)
        key = (key_id, public_pem)
    port_in, port_out = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    child = ctx.Process(target=_serve, args=(venue, markets, rate, key, port_out, stop), daemon=True)
    child.start()
    try:
        if not port_in.poll(STARTUP_TIMEOUT):
            raise RuntimeError("simulator did not start")
        port = port_in.recv()
        universe = build_universe(markets, seed=1)
        if venue == "kalshi":
            tickers = [m.kalshi_ticker for m in universe.markets]
            url = f"ws://127.0.0.1:{port}{KALSHI_WS_PATH}"
            assert credentials is not None
            headers = credentials.sign("GET", KALSHI_WS_PATH)
            subscribe: dict[str, Any] = {"id": 1, "cmd": "subscribe", "params": {
                "channels": ["orderbook_delta"], "market_tickers": tickers, "use_yes_price": False}}
            ping_text = None
        else:
            tokens = [t for m in universe.markets for t in (m.yes_token_id, m.no_token_id)]
            url = f"ws://127.0.0.1:{port}/ws/market"
            subscribe = {"assets_ids": tokens, "type": "market"}
            ping_text = "PING"
        assert child.pid is not None
        frames, events, cpu, sim_cpu = asyncio.run(asyncio.wait_for(
            _count(url, headers, subscribe, ping_text, venue == "polymarket", child.pid, warmup, duration),
            warmup + duration + 30))
    finally:
        stop.set()
        child.join(10)
        if child.is_alive():
            child.terminate()
    print(f"{venue:10s} markets={markets} rate={rate:g}/s/market window={duration:g}s: "
          f"{frames / duration:,.0f} frames/s, {events / duration:,.0f} messages/s "
          f"(CPU of one core: simulator {100 * sim_cpu / duration:.0f}%, client {100 * cpu / duration:.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venue", choices=("kalshi", "polymarket", "both"), default="both")
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5_000.0, help="updates/s per market asked of the driver")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    print_settings(args)
    for venue in ("kalshi", "polymarket") if args.venue == "both" else (args.venue,):
        run(venue, args.markets, args.rate, args.warmup, args.duration)


if __name__ == "__main__":
    main()
