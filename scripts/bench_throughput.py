"""Saturation throughput of the hot path, each against its physical limit measured in the same run.

1. **One worker on one venue connection vs the bare receive loop.** Frames captured
   from the Kalshi simulator (`bench_kalshi_client.capture`: subscribe ack, snapshots,
   then `orderbook_delta`s for every market) are replayed by a bare aiohttp server in
   its own process, as fast as the socket takes them, to whichever client connects
   and sends the same subscribe command. Two consumers, in turn, in a child process:
   * the worker's hot path: the real `KalshiWebSocketClient` (connection supervisor,
     parse, book, emit) with the worker's `Publisher` as its listener (stamp, encode,
     PUB send over ipc to a SUB drained in this process);
   * the limit: a bare aiohttp client that only receives and `orjson.loads` each frame.
   Reported: frames/s of each, and the ratio (target: the worker >= 70 % of the loop).
2. **The bus vs raw pyzmq.** A producer process publishes N records through the
   worker's `Publisher` (encode + PUB send); this process receives them in batches
   (poll, then drain without blocking) and decodes each with `markets.codec`. Then the
   same with pre-built payloads of the same size and no codec on either side.
   Reported: messages/s of each and the ratio.
3. `--profile`: the worker's hot path again under cProfile; the top entries by own time.
4. `--codec`: `msgpack` (the codec) vs `msgspec` encode/decode of the same record, and
   whether msgspec's bytes are identical.
`--loops asyncio,uvloop` runs part 1 under each event loop.

    python scripts/bench_throughput.py [--markets 50] [--rounds 400] [--bus-messages 300000] [--repeat 3]
                                       [--loops asyncio,uvloop] [--profile] [--codec]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing
import os
import pstats
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import aiohttp
import orjson
import zmq
from aiohttp import web

from bench_kalshi_client import capture
from benchstats import print_settings
from markets import codec
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.ws_client import KalshiWebSocketClient
from markets.models import MarketPrice, Platform, PriceStatus
from markets.sim.keys import generate_demo_keypair
from workers.publisher import Publisher

DONE_TIMEOUT = 120.0
POLL_S = 0.002


# -- 1. the replay server -----------------------------------------------------------------


def _replay_server(frames: list[str], commands: int, port_out: Connection, stop: Event) -> None:
    """Child process: to each connection, after its first `commands` text frames, every frame, at once."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        received = 0
        async for _ in ws:
            received += 1
            if received == commands:
                for frame in frames:
                    await ws.send_str(frame)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port_out.send(runner.addresses[0][1])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    asyncio.run(main())


# -- 1. the consumers (in a child process) -------------------------------------------------


async def _wait_count(count: Callable[[], int], total: int) -> tuple[int, int]:
    """(first, last) ns at which `count()` left 0 and reached `total`, sampled every POLL_S."""
    deadline = time.monotonic() + DONE_TIMEOUT
    first = 0
    while True:
        n = count()
        now = time.time_ns()
        if n and not first:
            first = now
        if n >= total:
            return first, now
        if time.monotonic() > deadline:
            raise TimeoutError(f"received {n} of {total} frames")
        await asyncio.sleep(POLL_S)


async def _worker_path(url: str, credentials: KalshiCredentials, tickers: list[str], total: int, pub: str) -> float:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(pub)
    publisher = Publisher(sock)
    for ticker in tickers:
        publisher.own((Platform.KALSHI, ticker), 1)
    client = KalshiWebSocketClient(credentials, url=url, lifecycle=False)
    client.add_listener(publisher.publish)
    try:
        await client.subscribe(tickers)
        first, last = await _wait_count(lambda: client.stats.messages, total)
        assert not client.stats.gaps and not sum(client.stats.rejected.values()), client.stats.snapshot()
    finally:
        await client.close()
        sock.close()
    return total / ((last - first) / 1e9)


async def _bare_loop(url: str, command: str, total: int) -> float:
    loads = orjson.loads
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_str(command)
        received, first = 0, 0
        async with asyncio.timeout(DONE_TIMEOUT):
            while received < total:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"replay socket ended: {msg.type}")
                loads(msg.data)
                received += 1
                if received == 1:
                    first = time.time_ns()
        last = time.time_ns()
    return (total - 1) / ((last - first) / 1e9)


def _consumer(kind: str, loop: str, url: str, key_id: str, key_path: str, tickers: list[str], command: str,
              total: int, pub: str, profile: bool, out: Connection) -> None:
    """Child process: one consumer under one event loop; sends back frames/s (and a profile)."""
    if loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    credentials = KalshiCredentials.from_files(key_id, key_path)
    run = (lambda: _worker_path(url, credentials, tickers, total, pub)) if kind == "worker" else \
        (lambda: _bare_loop(url, command, total))
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    rate = asyncio.run(run())
    report = ""
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        report = text.getvalue()
    out.send((rate, report))


def _drain_sub(pub: str, stop: threading.Event) -> None:
    """The worker's subscriber: drain everything it publishes (a PUB with no SUB would not send)."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(pub)
    while not stop.is_set():
        if sock.poll(50):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
    sock.close()


def bench_worker(args: argparse.Namespace, spawn: multiprocessing.context.SpawnContext) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key_id, key_path, public_pem = generate_demo_keypair(Path(tmp))
        credentials = KalshiCredentials.from_files(key_id, key_path)
        frames, truth = asyncio.run(capture(credentials, public_pem, args.markets, args.rounds,
                                            outbound_limit=10 * args.markets * args.rounds))
        tickers = list(truth)
        probe = KalshiWebSocketClient(credentials, url="ws://127.0.0.1:9/unused", lifecycle=False)
        commands = probe._build_subscribe_message(tickers)
        assert len(commands) == 1, "one subscribe command expected: raise markets_per_subscription"
        receiver, sender = spawn.Pipe(duplex=False)
        stop = spawn.Event()
        server = spawn.Process(target=_replay_server, args=(frames, len(commands), sender, stop))
        server.start()
        pub = f"ipc://{tmp}/pub"
        drain_stop = threading.Event()
        drainer = threading.Thread(target=_drain_sub, args=(pub, drain_stop), daemon=True)
        drainer.start()
        try:
            url = f"ws://127.0.0.1:{receiver.recv()}/"
            print(f"worker vs bare loop: {len(frames):,} frames ({args.markets} Kalshi markets, "
                  f"{args.rounds} rounds), replayed as fast as the socket takes them", flush=True)
            for loop in args.loops.split(","):
                # Interleaved and repeated: on a shared machine the load moves between two runs.
                runs: dict[str, list[float]] = {"bare": [], "worker": []}
                for _ in range(args.repeat):
                    for kind in runs:
                        runs[kind].append(_run_consumer(spawn, kind, loop, url, key_id, str(key_path), tickers,
                                                        commands[0], len(frames), pub, False)[0])
                bare, worker = statistics.median(runs["bare"]), statistics.median(runs["worker"])
                print(f"  [{loop}] median of {args.repeat}: bare receive+parse {bare:,.0f} frames/s   worker hot "
                      f"path {worker:,.0f} frames/s   ratio {worker / bare:.0%}", flush=True)
            if args.profile:
                _, report = _run_consumer(spawn, "worker", args.loops.split(",")[0], url, key_id, str(key_path),
                                          tickers, commands[0], len(frames), pub, True)
                print("  worker hot path under cProfile, top entries by own time:")
                print("\n".join("    " + line for line in report.splitlines() if line.strip()), flush=True)
        finally:
            stop.set()
            server.join(10)
            drain_stop.set()
            drainer.join(5)


def _run_consumer(spawn: multiprocessing.context.SpawnContext, kind: str, loop: str, url: str, key_id: str,
                  key_path: str, tickers: list[str], command: str, total: int, pub: str,
                  profile: bool) -> tuple[float, str]:
    receiver, sender = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_consumer, args=(kind, loop, url, key_id, key_path, tickers, command, total,
                                                   pub, profile, sender))
    child.start()
    try:
        if not receiver.poll(DONE_TIMEOUT):
            raise RuntimeError(f"{kind} consumer did not finish")
        return receiver.recv()
    finally:
        child.join(10)


# -- 2. the bus --------------------------------------------------------------------------------


def sample_prices(n: int) -> list[MarketPrice]:
    """N realistic records over 100 markets (prices move, sizes change)."""
    return [MarketPrice(f"KXNFLGAME-26NOV{k % 100:02d}KCBUF-KC", 0.40 + (k % 17) / 1000, 0.45 + (k % 13) / 1000,
                        100.0 + k % 50, 200.0 + k % 30, Platform.KALSHI, PriceStatus.LIVE, 0.42, 1_796_000_000_000,
                        time.time_ns()) for k in range(n)]


def _producer(kind: str, endpoint: str, n: int, go: Event) -> None:
    """Child process: publish n records through the worker's Publisher, or n raw same-size messages."""
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind(endpoint)
    prices = sample_prices(n)
    go.wait(30)
    if kind == "codec":
        publisher = Publisher(sock)
        for key in {(p.platform, p.market_id) for p in prices}:
            publisher.own(key, 1)
        publish = publisher.publish
        for price in prices:
            publish(price)
    else:
        template = codec.encode(prices[0]._replace(seq=1, epoch=1, publish_ts_ns=time.time_ns()))
        topic = codec.topic(Platform.KALSHI, prices[0].market_id)
        payload = os.urandom(len(template))
        send = sock.send_multipart
        for _ in range(n):
            send((topic, payload), zmq.NOBLOCK)
    sock.close(linger=-1)


def bench_bus(args: argparse.Namespace, spawn: multiprocessing.context.SpawnContext) -> None:
    n = args.bus_messages
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("raw", "codec"):
            endpoint = f"ipc://{tmp}/{kind}"
            go = spawn.Event()
            child = spawn.Process(target=_producer, args=(kind, endpoint, n, go))
            child.start()
            sock = zmq.Context.instance().socket(zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(endpoint)
            time.sleep(1.0)  # the subscription reaches the PUB
            go.set()
            decode = codec.decode if kind == "codec" else None
            received, first = 0, 0
            deadline = time.monotonic() + DONE_TIMEOUT
            while received < n and time.monotonic() < deadline:
                if not sock.poll(1000):
                    continue
                while True:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if decode is not None:
                        decode(parts[1])
                    received += 1
                    if received == 1:
                        first = time.time_ns()
            last = time.time_ns()
            sock.close(linger=0)
            child.join(30)
            if received < n:
                raise RuntimeError(f"bus {kind}: received {received} of {n}")
            rates[kind] = (n - 1) / ((last - first) / 1e9)
    size = len(codec.encode(sample_prices(1)[0]._replace(seq=1, epoch=1, publish_ts_ns=time.time_ns())))
    print(f"bus: {n:,} messages of {size} bytes over ipc   raw pyzmq "
          f"{rates['raw']:,.0f}/s   Publisher+codec+batched drain {rates['codec']:,.0f}/s   "
          f"ratio {rates['codec'] / rates['raw']:.0%}", flush=True)


# -- 4. msgpack vs msgspec ----------------------------------------------------------------------


def msgspec_decoder() -> Callable[[bytes], MarketPrice]:
    """What `markets.codec.decode` could be on msgspec: a typed array-like Struct validates in C
    (non-empty id, prices in [0, 1] and not NaN, non-negative sizes and counts, enum values)."""
    from typing import Annotated

    import msgspec

    prob = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None
    size = Annotated[float, msgspec.Meta(ge=0.0)] | None
    count = Annotated[int, msgspec.Meta(ge=0)]

    # Built with defstruct: this module's postponed annotations would hide the local types from msgspec.
    wire = msgspec.defstruct("Wire", [
        ("version", int), ("market_id", Annotated[str, msgspec.Meta(min_length=1)]), ("yes_bid", prob),
        ("yes_ask", prob), ("yes_bid_size", size), ("yes_ask_size", size), ("platform", Platform),
        ("status", PriceStatus), ("last_trade", prob), ("venue_ts_ms", count | None), ("recv_ts_ns", count),
        ("publish_ts_ns", count), ("seq", count), ("epoch", count)], array_like=True)
    decoder = msgspec.msgpack.Decoder(wire)

    def decode(payload: bytes) -> MarketPrice:
        w = decoder.decode(payload)
        if w.version != codec.SCHEMA_VERSION:
            raise codec.CodecError(f"MarketPrice schema version {w.version!r} is not {codec.SCHEMA_VERSION}")
        return MarketPrice(w.market_id, w.yes_bid, w.yes_ask, w.yes_bid_size, w.yes_ask_size, w.platform,
                           w.status, w.last_trade, w.venue_ts_ms, w.recv_ts_ns, w.publish_ts_ns, w.seq, w.epoch)

    return decode


def bench_codec(runs: int = 200_000) -> None:
    import msgspec

    price = sample_prices(1)[0]._replace(seq=7, epoch=3, publish_ts_ns=time.time_ns())
    encoder, typed_decode = msgspec.msgpack.Encoder(), msgspec_decoder()
    ours = codec.encode(price)
    theirs = encoder.encode((codec.SCHEMA_VERSION, *price))
    rejected = 0
    for bad in (price._replace(yes_bid=1.5), price._replace(yes_ask=float("nan")), price._replace(seq=-1),
                price._replace(market_id="")):
        try:
            typed_decode(codec.encode(bad))
        except msgspec.ValidationError:
            rejected += 1
    timings = {}
    for name, call in (("msgpack encode (codec.encode)", lambda: codec.encode(price)),
                       ("msgspec encode", lambda: encoder.encode((codec.SCHEMA_VERSION, *price))),
                       ("msgpack decode+validate (codec.decode)", lambda: codec.decode(ours)),
                       ("msgspec typed decode+validate", lambda: typed_decode(ours))):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(runs // 3):
                call()
            best = min(best, (time.perf_counter() - started) / (runs // 3) * 1e9)
        timings[name] = best
    print(f"codec: {len(ours)}-byte record; msgspec bytes identical to msgpack's: {theirs == ours}; "
          f"typed decode equal to codec.decode: {typed_decode(ours) == codec.decode(ours)}; "
          f"bad records rejected: {rejected}/4")
    for name, ns in timings.items():
        print(f"  {name:42s} {ns:7.0f} ns (best of 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=400, help="updates per market in the captured stream")
    parser.add_argument("--bus-messages", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each consumer (median)")
    parser.add_argument("--loops", default="asyncio", help="event loops for part 1, e.g. asyncio,uvloop")
    parser.add_argument("--profile", action="store_true", help="profile the worker's hot path (cProfile)")
    parser.add_argument("--codec", action="store_true", help="msgpack vs msgspec")
    args = parser.parse_args()
    print_settings(args)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    spawn = multiprocessing.get_context("spawn")
    bench_worker(args, spawn)
    bench_bus(args, spawn)
    if args.codec:
        bench_codec()


if __name__ == "__main__":
    main()
