"""`arbees sim`: run as a real child process, connected to, and stopped with SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import sys
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from broker.cli import main

ARBEES = [sys.executable, "-c", "from broker.cli import main; main()"]
URL_LINE = re.compile(r"^(?P<label>[A-Za-z ]+):\s+(?P<url>(?:ws|http)://\S+)$")
EXPORT_LINE = re.compile(r"^export (?P<name>[A-Z_]+)=(?P<value>\S+)$")


async def read_banner(process: asyncio.subprocess.Process) -> tuple[dict[str, str], dict[str, str]]:
    """(URLs by label, exported variables) from the start-up banner."""
    assert process.stdout is not None
    urls: dict[str, str] = {}
    exports: dict[str, str] = {}
    async with asyncio.timeout(20):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "arbees sim exited before printing its banner"
            line = line.strip()
            if match := URL_LINE.match(line):
                urls[match["label"]] = match["url"]
            elif match := EXPORT_LINE.match(line):
                exports[match["name"]] = match["value"]
            elif line.startswith("Press Ctrl-C"):
                return urls, exports


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_arbees_sim_serves_both_venues_and_stops_on_a_signal(tmp_path: Path,
                                                                  stop_signal: signal.Signals) -> None:
    send_log = tmp_path / "sends.tsv"
    process = await asyncio.create_subprocess_exec(
        *ARBEES, "sim", "--markets", "2", "--rate", "20", "--seed", "4",
        "--key-dir", str(tmp_path / "keys"), "--send-log", str(send_log),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        urls, exports = await read_banner(process)
        assert set(urls) == {"Kalshi WebSocket", "Kalshi REST", "Polymarket WebSocket",
                             "Polymarket CLOB REST", "Polymarket Gamma REST"}
        key_path = Path(exports["KALSHI_PRIVATE_KEY_PATH"])
        assert key_path.parent == tmp_path / "keys" and exports["KALSHI_API_KEY_ID"] in key_path.name
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600, "the demo private key is for its owner only"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{urls['Polymarket Gamma REST']}/markets") as response:
                markets = await response.json()
            tokens = json.loads(markets[0]["clobTokenIds"])
            async with http.ws_connect(urls["Polymarket WebSocket"]) as ws:
                await ws.send_str(json.dumps({"assets_ids": tokens, "type": "market"}))
                dump = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                assert [book["asset_id"] for book in dump] == tokens
                update = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                assert update["event_type"] in ("price_change", "last_trade_price", "book",
                                                "tick_size_change")
    finally:
        if process.returncode is None:
            process.send_signal(stop_signal)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode()
    assert b"arbees sim: stopped" in stdout
    assert b"Traceback" not in stderr
    venues = {line.split("\t")[0] for line in send_log.read_text().splitlines()}
    assert "polymarket" in venues


async def test_arbees_stream_follows_the_pasted_exports_to_a_running_sim(tmp_path: Path) -> None:
    """The two-terminal flow: `arbees sim` in one, its exports and `arbees stream` in the other."""
    sim = await asyncio.create_subprocess_exec(
        *ARBEES, "sim", "--markets", "2", "--rate", "20", "--key-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        urls, exports = await read_banner(sim)
        assert exports["KALSHI_WS_URL"] == urls["Kalshi WebSocket"]
        assert exports["POLYMARKET_GAMMA_URL"] == urls["Polymarket Gamma REST"]
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("KALSHI_", "POLYMARKET_"))} | exports
        stream = await asyncio.create_subprocess_exec(
            *ARBEES, "stream", "--duration", "2", "--display", "lines", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(stream.communicate(), 30)
        assert stream.returncode == 0, err.decode()
        venues = {line.split()[1] for line in out.decode().splitlines()}
        assert venues == {"kalshi", "polymarket"}
        assert "for 4 markets" in err.decode()
    finally:
        if sim.returncode is None:
            sim.send_signal(signal.SIGTERM)
        await asyncio.wait_for(sim.communicate(), 15)


def test_bad_fault_spec_is_a_clear_usage_error() -> None:
    result = CliRunner().invoke(main, ["sim", "--faults", "drop_after=10,explode_every=3"])
    assert result.exit_code == 2
    assert "explode_every" in result.output and "--faults" in result.output


def test_non_loopback_host_needs_allow_remote() -> None:
    result = CliRunner().invoke(main, ["sim", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output
