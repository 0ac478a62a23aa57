"""Polymarket client throughput: the real message handler, then end to end over loopback.

1. handler: frames are recorded from the simulator over a raw socket (the
   initial dump, then `price_change`/`book`/`last_trade_price` frames from
   stepping every market), and replayed straight into a connected
   `PolymarketWebSocketClient._handle_message`: parse, route per token, apply,
   cross-check best bid/ask, emit on top change to a listener. Each run replays
   the whole recording (its dump resets the books); the runs' messages/s are
   reported as median and spread, and the per-frame handler time as percentiles
   from a separately timed pass.
2. e2e: the simulator runs in a child process at a fixed update rate; the client
   streams every market through `stream_prices` for a few seconds. Reported:
   frames/s received, prices/s delivered, gaps and rejections, and the one-way
   latency from the simulator's send stamp (its send log, keyed by entry hash) to
   the client's receive stamp, for a sample of frames.

    python scripts/bench_polymarket_client.py [--markets 20] [--steps 400] [--runs 7]
        [--e2e-rate 100] [--e2e-seconds 5] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from benchstats import percentile, print_settings
from markets.polymarket.client import PolymarketClient
from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.sendlog import SendLog, read_send_log
from markets.sim.universe import build_universe

IDLE = 0.3
"""Seconds without a frame that end a recording."""


async def record_frames(sim: PolymarketSimulator, steps: int) -> list[str]:
    """Subscribe every YES token on a raw socket and keep every data frame the venue sends."""
    tokens = [m.yes_token_id for m in sim.universe.markets]
    frames: list[str] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        await ws.send_str(orjson.dumps({"assets_ids": tokens, "type": "market", "initial_dump": True}).decode())
        frames.append((await ws.receive(timeout=5)).data)
        for _ in range(steps):
            for market in sim.universe.markets:
                sim.step_market(market)
            await ws.send_str("PING")
            while True:
                try:
                    msg = await ws.receive(timeout=IDLE)
                except TimeoutError:
                    break
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"recording socket ended: {msg.type}")
                if msg.data == "PONG":
                    break
                frames.append(msg.data)
    return frames


def replay(client: PolymarketWebSocketClient, frames: list[str]) -> float:
    """Seconds to push every frame through the client's handler."""
    handle = client._handle_message
    started = time.perf_counter()
    for frame in frames:
        handle(frame, time.time_ns())
    return time.perf_counter() - started


def frame_times_us(client: PolymarketWebSocketClient, frames: list[str]) -> list[float]:
    handle = client._handle_message
    clock = time.perf_counter_ns
    times = []
    for frame in frames:
        start = clock()
        handle(frame, time.time_ns())
        times.append((clock() - start) / 1000)
    return times


async def bench_handler(markets: int, steps: int, runs: int) -> None:
    async with PolymarketSimulator(build_universe(markets, seed=1), rate=0, book_after_tick_delay=0.01) as sim:
        frames = await record_frames(sim, steps)
        events = sum(frame.count('"asset_id"') for frame in frames)
        async with PolymarketClient(clob_url=sim.clob_url, gamma_url=sim.gamma_url, rate=1000) as rest:
            client = PolymarketWebSocketClient(url=sim.ws_url, resolver=rest, ping_interval=1.0)
            emitted = 0

            def count(_: object) -> None:
                nonlocal emitted
                emitted += 1

            client.add_listener(count)
            try:
                ids = [m.condition_id for m in sim.universe.markets]
                await client.subscribe(ids)
                async with asyncio.timeout(10):
                    while any(client.latest_price(m) is None for m in ids):
                        await asyncio.sleep(0.01)
                replay(client, frames)  # warm-up; also checks the recording replays cleanly
                if client.stats.gaps or client.stats.rejected:
                    raise RuntimeError(f"replay is not clean: gaps={client.stats.gaps} "
                                       f"rejected={dict(client.stats.rejected)}")
                rates = []
                emitted = 0
                for _ in range(runs):
                    rates.append(len(frames) / replay(client, frames))
                per_run_prices = emitted / runs
                times = frame_times_us(client, frames)
            finally:
                await client.close()
    print(f"handler: {len(frames)} frames ({events} token events: books, level changes, trades) "
          f"from {markets} markets x {steps} steps, {runs} runs")
    print(f"  frames/s   median {statistics.median(rates):,.0f}  min {min(rates):,.0f}  max {max(rates):,.0f}")
    print(f"  token events/s  median {statistics.median(rates) * events / len(frames):,.0f}")
    print(f"  prices emitted per run {per_run_prices:,.0f}")
    print(f"  per-frame handler time (us)  p50 {percentile(times, 0.5):.1f}  p90 {percentile(times, 0.9):.1f}  "
          f"p99 {percentile(times, 0.99):.1f}  max {max(times):.1f}")


def serve_simulator(conn: multiprocessing.connection.Connection, markets: int, rate: float,
                    log_path: str) -> None:
    """Child process: run the simulator until the parent says stop."""

    async def main() -> None:
        send_log = SendLog(path=Path(log_path))
        async with PolymarketSimulator(build_universe(markets, seed=2), rate=rate, send_log=send_log) as sim:
            conn.send((sim.ws_url, sim.clob_url, sim.gamma_url))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        send_log.close()
        conn.send("stopped")  # the send log is complete on disk

    asyncio.run(main())


class SamplingClient(PolymarketWebSocketClient):
    """Keeps (receive time, frame) of every `every`-th frame for the latency join."""

    def __init__(self, *, every: int, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.every = every
        self.samples: list[tuple[int, str]] = []
        self._count = 0

    def _handle_message(self, data: str, recv_ns: int) -> None:
        self._count += 1
        if self._count % self.every == 0:
            self.samples.append((recv_ns, data))
        super()._handle_message(data, recv_ns)


def first_hash(frame: str) -> str | None:
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if isinstance(event, list):
        event = event[0] if event else {}
    if not isinstance(event, dict):
        return None
    changes = event.get("price_changes")
    if isinstance(changes, list) and changes and isinstance(changes[0], dict):
        return changes[0].get("hash")
    return event.get("hash")


async def bench_e2e(markets: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = str(Path(tmp) / "send.log")
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.get_context("spawn").Process(
            target=serve_simulator, args=(child, markets, rate, log_path), daemon=True)
        proc.start()
        try:
            ws_url, clob_url, gamma_url = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
            async with PolymarketClient(clob_url=clob_url, gamma_url=gamma_url, rate=1000) as rest:
                client = SamplingClient(every=10, url=ws_url, resolver=rest, ping_interval=1.0)
                ids = [m.condition_id for m in build_universe(markets, seed=2).markets]
                delivered = 0
                try:
                    async with asyncio.timeout(seconds + 10):
                        prices = client.stream_prices(ids)
                        async for _ in prices:
                            if all(client.latest_price(m) is not None for m in ids):
                                break
                        start_msgs, start = client.stats.messages, time.perf_counter()
                        async for _ in prices:
                            delivered += 1
                            if time.perf_counter() - start >= seconds:
                                break
                        elapsed = time.perf_counter() - start
                        received = client.stats.messages - start_msgs
                        await prices.aclose()
                finally:
                    await client.close()
        finally:
            parent.send("stop")
            if parent.poll(10):
                parent.recv()
            proc.join(10)
        sent = {record.key: record.send_ns for record in read_send_log(Path(log_path))}
    latencies = [(recv_ns - sent[key]) / 1000 for recv_ns, frame in client.samples
                 if (key := first_hash(frame)) is not None and key in sent]
    print(f"e2e: simulator process at {rate:g} updates/s x {markets} markets, {seconds:g} s of streaming")
    print(f"  frames received/s {received / elapsed:,.0f}  prices delivered/s {delivered / elapsed:,.0f}  "
          f"gaps {client.stats.gaps}  rejected {sum(client.stats.rejected.values())}  "
          f"reconnects {client.stats.reconnects}")
    if latencies:
        print(f"  send->receive latency (us, {len(latencies)} sampled frames)  p50 {percentile(latencies, 0.5):.0f}  "
              f"p90 {percentile(latencies, 0.9):.0f}  p99 {percentile(latencies, 0.99):.0f}")
    else:
        print(f"  latency: none of {len(client.samples)} sampled frames matched the {len(sent)} send-log records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400, help="simulator steps per market to record")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--e2e-rate", type=float, default=100.0, help="updates/s per market in the e2e run")
    parser.add_argument("--e2e-seconds", type=float, default=5.0)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    print_settings(args)
    asyncio.run(bench_handler(args.markets, args.steps, args.runs))
    if not args.skip_e2e:
        asyncio.run(bench_e2e(args.markets, args.e2e_rate, args.e2e_seconds))


if __name__ == "__main__":
    main()
