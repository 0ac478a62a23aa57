"""`arbees stream` as a real child process (and click-level config errors in process)."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from broker.price_sources import _discover_polymarket_markets
from broker.price_table import CLEAR_SCREEN, PriceTable
from broker.signals import STOP_SIGNALS, install_stop_signals
from broker.stream_command import stream
from markets.models import MarketPrice, Platform, PriceStatus
from markets.polymarket.client import HybridPolymarketClient
from markets.sim.kalshi.simulator import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.universe import build_universe
from markets.sim.venues import SimulatedVenues
from tests.clients.conftest import serve_app

ARBEES = [sys.executable, "-c", "from broker.cli import main; main()"]
LINE = re.compile(r"^\S+ (kalshi|polymarket) (\S+) bid (\S+) x (\S+) ask (\S+) x (\S+) (live|stale|resyncing|closed)$")


def clean_env() -> dict[str, str]:
    """The child must not pick up real credentials from the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KALSHI_")}


async def run(*args: str, limit: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*ARBEES, "stream", *args, env=clean_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


def streamed_tickers(stdout: str) -> set[tuple[str, str]]:
    tickers = set()
    for line in stdout.splitlines():
        match = LINE.match(line)
        assert match, f"unexpected output line: {line!r}"
        tickers.add((match.group(1), match.group(2)))
    return tickers


async def test_duration_against_in_process_simulators() -> None:
    code, out, err = await run("--duration", "3")
    assert code == 0, err
    markets = build_universe(20, seed=0).markets
    assert streamed_tickers(out) == ({("kalshi", m.kalshi_ticker) for m in markets}
                                     | {("polymarket", m.condition_id) for m in markets})
    assert "stopped after" in err and "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_cleanly(sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(*ARBEES, "stream", env=clean_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            assert proc.stdout is not None
            first = await proc.stdout.readline()  # streaming has started
            assert LINE.match(first.decode().strip())
            proc.send_signal(sig)
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert b"stopped after" in err and b"Traceback" not in err


@pytest.fixture
async def venue(tmp_path: Path) -> AsyncIterator[tuple[KalshiSimulator, str, Path]]:
    """A Kalshi simulator the child reaches through the 'real venue' options."""
    key_id, key_path, public_pem = generate_demo_keypair(tmp_path / "keys")
    async with KalshiSimulator(build_universe(5, seed=2), rate=20) as sim:
        sim.register_key(key_id, public_pem)
        yield sim, key_id, key_path


async def test_configured_venue_and_market_selection(venue: tuple[KalshiSimulator, str, Path]) -> None:
    sim, key_id, key_path = venue
    wanted = [m.kalshi_ticker for m in sim.universe.markets[1:3]]
    code, out, err = await run("--kalshi-rest-url", sim.rest_url, "--kalshi-ws-url", sim.ws_url,
                               "--key-id", key_id, "--private-key", str(key_path),
                               "--markets", ",".join(wanted), "--duration", "1.5", "--no-use-yes-price")
    assert code == 0, err
    assert streamed_tickers(out) == {("kalshi", ticker) for ticker in wanted}


async def test_refused_key_is_a_clear_error(venue: tuple[KalshiSimulator, str, Path], tmp_path: Path) -> None:
    sim, _, _ = venue
    stranger, stranger_path, _ = generate_demo_keypair(tmp_path / "stranger")  # never registered
    code, _, err = await run("--kalshi-rest-url", sim.rest_url, "--kalshi-ws-url", sim.ws_url,
                             "--key-id", stranger, "--private-key", str(stranger_path), "--duration", "20")
    assert code == 1
    assert "Error:" in err and "HTTP 401" in err and "Traceback" not in err


async def test_one_venue_failing_is_reported_not_silent(tmp_path: Path) -> None:
    """Kalshi refusing the key ends the command with Kalshi's error; Polymarket had been streaming."""
    stranger, stranger_path, _ = generate_demo_keypair(tmp_path / "stranger")  # never registered
    async with SimulatedVenues(n_markets=3, seed=5, rate=20) as venues:
        code, out, err = await run(
            "--kalshi-rest-url", venues.kalshi.rest_url, "--kalshi-ws-url", venues.kalshi.ws_url,
            "--key-id", stranger, "--private-key", str(stranger_path),
            "--polymarket-clob-url", venues.polymarket.clob_url,
            "--polymarket-gamma-url", venues.polymarket.gamma_url,
            "--polymarket-ws-url", venues.polymarket.ws_url, "--duration", "20")
    assert code == 1 and "Traceback" not in err
    assert "Error: kalshi WebSocket handshake" in err and "HTTP 401" in err
    assert {venue for venue, _ in streamed_tickers(out)} == {"polymarket"}


async def test_bad_key_path_in_child_process(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    code, out, err = await run("--key-id", "abc", "--private-key", str(missing), "--duration", "1")
    assert code != 0 and out == ""
    assert "not found" in err and str(missing) in err and "Traceback" not in err


def test_config_errors_in_process(tmp_path: Path) -> None:
    runner = CliRunner()
    _, key_path, _ = generate_demo_keypair(tmp_path / "k")
    key_path.chmod(0o644)
    result = runner.invoke(stream, ["--key-id", "abc", "--private-key", str(key_path)], env={"KALSHI_API_KEY_ID": None})
    assert result.exit_code == 1 and "0644" in result.output and str(key_path) in result.output

    result = runner.invoke(stream, ["--kalshi-ws-url", "http://nope"])
    assert result.exit_code == 2 and "--kalshi-ws-url" in result.output and "ws/wss URL" in result.output

    result = runner.invoke(stream, ["--kalshi-rest-url", "http://127.0.0.1:9/trade-api/v2"],
                           env={"KALSHI_API_KEY_ID": None, "KALSHI_PRIVATE_KEY_PATH": None})
    assert result.exit_code == 1 and "KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH" in result.output


async def test_terminal_gets_a_table_redrawn_at_a_bounded_rate() -> None:
    controller, terminal = pty.openpty()
    proc = await asyncio.create_subprocess_exec(*ARBEES, "stream", "--duration", "2", "--refresh", "4",
                                                env=clean_env(), stdout=terminal, stderr=asyncio.subprocess.PIPE)
    os.close(terminal)
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    chunk = await loop.run_in_executor(None, os.read, controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            await proc.wait()
    finally:
        os.close(controller)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    screen = b"".join(chunks).decode()
    assert proc.returncode == 0
    frames = screen.split(CLEAR_SCREEN)[1:]
    assert 2 <= len(frames) <= 2 * 4 + 2, "redraws are bounded by --refresh, not by the update rate"
    header, rows = frames[-1].splitlines()[2], frames[-1].splitlines()[3:]
    assert header.split()[0] == "VENUE" and header.split()[-1] == "STATUS" and len(rows) == 40
    # A market re-gridded by a tick_size_change is legitimately RESYNCING until its fresh book,
    # and a Polymarket book is STALE for the few frames the venue's best prices run ahead of
    # a swept level's removal.
    statuses = [row.split()[-1] for row in rows]
    assert set(statuses) <= {"live", "resyncing", "stale"} and statuses.count("live") >= 30, statuses


def test_table_render_shows_empty_sides_explicitly() -> None:
    table = PriceTable()
    table.update("kalshi", MarketPrice("B-1", None, 0.4, None, 12.5, Platform.KALSHI, PriceStatus.STALE,
                                       recv_ts_ns=1_000_000_000))
    table.update("kalshi", MarketPrice("A-1", 0.31, 0.33, 1234.0, 5.0, Platform.KALSHI, recv_ts_ns=1_500_000_000))
    lines = table.render(now_ns=3_000_000_000, header="h").splitlines()
    assert lines[2].split() == ["VENUE", "MARKET", "BID", "BID", "SIZE", "ASK", "ASK", "SIZE", "AGE", "STATUS"]
    assert lines[3].split() == ["kalshi", "A-1", "0.3100", "1,234.00", "0.3300", "5.00", "1.5s", "live"]
    assert lines[4].split() == ["kalshi", "B-1", "-", "-", "0.4000", "12.50", "2.0s", "stale"]


async def test_a_second_stop_signal_is_not_swallowed() -> None:
    """After the first signal the default actions are back, so a hung shutdown still yields to Ctrl-C."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(5):
            await stop.wait()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def test_polymarket_discovery_lists_a_market_once_when_pages_shift() -> None:
    """Offset pages over a listing that changed meanwhile overlap; a market is streamed once."""
    def market(n: int) -> dict[str, object]:
        return {"id": str(n), "conditionId": f"0x{n:064x}", "outcomes": '["Yes", "No"]',
                "clobTokenIds": f'["{2 * n}", "{2 * n + 1}"]'}

    async def markets(request: web.Request) -> web.Response:
        # A market was inserted before the second page was read, so market 100 is listed again.
        numbers = range(1, 101) if request.query["offset"] == "0" else range(100, 151)
        return web.json_response([market(n) for n in numbers])

    app = web.Application()
    app.router.add_get("/markets", markets)
    async with serve_app(app) as root:
        client = HybridPolymarketClient(clob_url=root, gamma_url=root, ws_url="ws://127.0.0.1:9/ws")
        try:
            async with asyncio.timeout(10):
                found = await _discover_polymarket_markets(client, limit=1000)
        finally:
            await client.close()
    assert found == tuple(f"0x{n:064x}" for n in range(1, 151))
