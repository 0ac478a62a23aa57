"""Kalshi WebSocket client throughput and latency.

Two measurements:

1. **parse + apply** — frames captured from the Kalshi simulator over a real socket
   (its own encoder: subscribe acks, snapshots and `orderbook_delta` frames for every
   market) are fed to a fresh `KalshiWebSocketClient._handle_message` per run, with a
   `time.time_ns()` stamp per frame as the socket reader takes it and a stream queue
   attached as a consumer. Reported: messages/s per run (median, min, max) and the
   per-message cost. Each run's books are checked against the simulator's.
2. **end to end** — the simulator runs in its own process at a fixed update rate,
   writing its `SendLog` (send time per `sid:seq`) to a file; the real client in this
   process connects over loopback, subscribes, and stamps every frame on receipt.
   Reported per rate: frames/s received and p50/p90/p99 of (receive time - simulator
   send time) over every frame of the window.

    python scripts/bench_kalshi_client.py [--markets 20] [--rounds 300] [--runs 7]
                                          [--rates 50,500] [--duration 5] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import aiohttp

from benchstats import percentile, print_settings
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.models import PriceStatus
from markets.price_queue import LatestPriceQueue
from markets.sim.keys import generate_demo_keypair
from markets.sim.sendlog import read_send_log
from markets.sim.universe import build_universe

SEED = 3
STARTUP_TIMEOUT = 30.0


# -- 1. parse + apply ----------------------------------------------------------------


def offline_client(credentials: KalshiCredentials, tickers: list[str]) -> tuple[KalshiWebSocketClient, list[str]]:
    """A client in the state a live one has right after sending its subscribes, without a
    socket: books exist and the subscribe commands (ids 1..n) await their acks."""
    client = KalshiWebSocketClient(credentials, url="ws://127.0.0.1:9/unused")
    for ticker in tickers:
        client._books[ticker] = client._new_book(ticker)
    return client, client._build_subscribe_message(tickers)


async def capture(credentials: KalshiCredentials, public_pem: bytes, markets: int, rounds: int,
                  outbound_limit: int = 20_000
                  ) -> tuple[list[str], dict[str, tuple[dict[int, int], dict[int, int]]]]:
    """Frames the simulator sends for `rounds` updates of every market, and its final books.

    Every update is queued before the first is read: `outbound_limit` must exceed the
    frames of a capture, or the simulator ends the subscription with error 25."""
    from markets.sim.kalshi import KalshiSimulator

    universe = build_universe(markets, seed=SEED)
    tickers = [m.kalshi_ticker for m in universe.markets]
    async with KalshiSimulator(universe, rate=0.0, seed=SEED, outbound_limit=outbound_limit) as sim:
        sim.register_key(credentials.key_id, public_pem)
        _, commands = offline_client(credentials, tickers)
        frames: list[str] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(
                sim.ws_url, headers=credentials.sign("GET", "/trade-api/ws/v2")) as ws:
            for command in commands:
                await ws.send_str(command)
            await _read_until(ws, frames, lambda: sum('"orderbook_snapshot"' in f for f in frames) == markets)
            for _ in range(rounds):
                for market in universe.markets:
                    sim.step_market(market)
            await ws.send_str('{"id": 999999, "cmd": "list_subscriptions"}')
            await _read_until(ws, frames, lambda: '"id":999999' in frames[-1])
            frames.pop()
        return frames, {t: sim.book_levels(t) for t in tickers}


async def _read_until(ws: aiohttp.ClientWebSocketResponse, into: list[str], done: object) -> None:
    async with asyncio.timeout(30):
        while not (into and done()):  # type: ignore[operator]
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"capture socket ended: {msg.type}")
            into.append(msg.data)


def replay(credentials: KalshiCredentials, tickers: list[str], frames: list[str],
           truth: dict[str, tuple[dict[int, int], dict[int, int]]]) -> float:
    """Feed every frame to a fresh client; return seconds spent in the loop."""
    client, _ = offline_client(credentials, tickers)
    queue = LatestPriceQueue()
    client.add_listener(queue.put)
    handle, now = client._handle_message, time.time_ns
    start = time.perf_counter()
    for data in frames:
        handle(data, now())
    elapsed = time.perf_counter() - start
    for ticker in tickers:
        book = client.book(ticker)
        assert book is not None and book.status is PriceStatus.LIVE, ticker
        assert (book.yes_bids, book.no_bids) == truth[ticker], f"replayed book differs: {ticker}"
    assert not client.stats.rejected and not client.stats.gaps, client.stats.snapshot()
    return elapsed


def bench_parse_apply(credentials: KalshiCredentials, public_pem: bytes, markets: int, rounds: int,
                      runs: int) -> None:
    frames, truth = asyncio.run(capture(credentials, public_pem, markets, rounds))
    tickers = list(truth)
    deltas = sum('"orderbook_delta"' in f for f in frames)
    replay(credentials, tickers, frames, truth)  # warm-up
    rates = sorted(len(frames) / replay(credentials, tickers, frames, truth) for _ in range(runs))
    median = statistics.median(rates)
    print(f"parse+apply: {len(frames)} frames ({deltas} deltas, {markets} markets), {runs} runs")
    print(f"  messages/s  median {median:,.0f}   min {rates[0]:,.0f}   max {rates[-1]:,.0f}")
    print(f"  per message median {1e6 / median:.2f} us")


# -- 2. end to end -----------------------------------------------------------------------


def _simulator_process(markets: int, rate: float, key_id: str, public_pem: bytes, log_path: str,
                       port_out: Connection, stop: Event) -> None:
    """Child process: one Kalshi simulator writing its send log to `log_path`."""
    from markets.sim.kalshi import KalshiSimulator
    from markets.sim.sendlog import SendLog

    async def main() -> None:
        send_log = SendLog(maxlen=1000, path=Path(log_path))
        async with KalshiSimulator(build_universe(markets, seed=SEED), rate=rate, seed=SEED,
                                   outbound_limit=1_000_000, send_log=send_log) as sim:
            sim.register_key(key_id, public_pem)
            port_out.send(sim.ws_url)
            while not stop.is_set():
                await asyncio.sleep(0.05)
        send_log.close()

    asyncio.run(main())


class StampingClient(KalshiWebSocketClient):
    """Records (receive ns, frame) for every frame inside the measurement window."""

    recording = False
    samples: list[tuple[int, str]]

    def _handle_message(self, data: str, recv_ns: int) -> None:
        super()._handle_message(data, recv_ns)
        if self.recording:
            self.samples.append((recv_ns, data))


async def _stream(url: str, credentials: KalshiCredentials, tickers: list[str], warmup: float,
                  duration: float) -> tuple[StampingClient, float]:
    client = StampingClient(credentials, url=url)
    client.samples = []

    async def consume() -> None:
        # Keep the stream's consumer side running, as a real reader would; the frames are timed in `samples`.
        async for _ in client.stream_prices(tickers):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(warmup)
    client.recording = True
    start = time.perf_counter()
    await asyncio.sleep(duration)
    client.recording = False
    elapsed = time.perf_counter() - start
    consumer.cancel()
    await client.close()
    return client, elapsed


def bench_end_to_end(credentials: KalshiCredentials, public_pem: bytes, markets: int, rate: float,
                     warmup: float, duration: float) -> None:
    import orjson

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "sendlog.tsv"
        receiver, sender = context.Pipe(duplex=False)
        stop = context.Event()
        child = context.Process(target=_simulator_process, args=(
            markets, rate, credentials.key_id, public_pem, str(log_path), sender, stop))
        child.start()
        try:
            if not receiver.poll(STARTUP_TIMEOUT):
                raise RuntimeError("simulator process did not start")
            url = receiver.recv()
            tickers = [m.kalshi_ticker for m in build_universe(markets, seed=SEED).markets]
            client, elapsed = asyncio.run(_stream(url, credentials, tickers, warmup, duration))
        finally:
            stop.set()
            child.join(10)
        wanted: dict[str, int] = {}
        for recv_ns, data in client.samples:
            frame = orjson.loads(data)
            if frame.get("type") == "orderbook_delta":
                wanted[f"{frame['sid']}:{frame['seq']}"] = recv_ns
        latencies = [wanted[record.key] - record.send_ns for record in read_send_log(log_path)
                     if record.key in wanted]
    frames = len(client.samples)
    print(f"end to end @ {rate:g} updates/s/market x {markets} markets: {frames / elapsed:,.0f} frames/s "
          f"received over {elapsed:.1f} s; reconnects {client.stats.reconnects}, "
          f"rejected {sum(client.stats.rejected.values())}, gaps {client.stats.gaps}")
    if latencies:
        print(f"  receive - send over {len(latencies)} deltas: p50 {percentile(latencies, 0.5) / 1e3:.0f} us"
              f"   p90 {percentile(latencies, 0.9) / 1e3:.0f} us   p99 {percentile(latencies, 0.99) / 1e3:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=300, help="updates per market in the captured stream")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rates", default="50,500", help="end-to-end updates/s per market, comma-separated")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    print_settings(args)
    with tempfile.TemporaryDirectory() as tmp:
        key_id, path, public_pem = generate_demo_keypair(Path(tmp))
        credentials = KalshiCredentials.from_files(key_id, path)
    bench_parse_apply(credentials, public_pem, args.markets, args.rounds, args.runs)
    for rate in (float(r) for r in args.rates.split(",") if r):
        bench_end_to_end(credentials, public_pem, args.markets, rate, args.warmup, args.duration)


if __name__ == "__main__":
    main()
