"""The demo fair-value feed through real ZeroMQ: `arbees sim --fair-feed` as a child
process, and the publisher in-process for what a child cannot show quickly (a value
that moves goes out at once; one game's topic never carries another's)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import zmq
import zmq.asyncio
from click.testing import CliRunner

from broker.cli import main
from broker.fair_publisher import FairFeedPublisher
from shard.fair_feed import TOPIC_PREFIX, FairValue, decode_fair, fair_topic
from tests.sim.test_sim_cli import ARBEES, read_banner


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path (ipc socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="arbees-fair-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def zmq_context() -> Iterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


def subscriber(context: zmq.asyncio.Context, endpoint: str, prefix: bytes) -> zmq.asyncio.Socket:
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


def decoded(frames: list[bytes]) -> tuple[bytes, FairValue]:
    topic, payload = frames
    return topic, decode_fair(payload)


async def receive(sock: zmq.asyncio.Socket) -> tuple[bytes, FairValue]:
    return decoded(await asyncio.wait_for(sock.recv_multipart(), 10))


async def test_arbees_sim_publishes_every_games_fair_value_on_its_own_topic(
        short_dir: Path, zmq_context: zmq.asyncio.Context) -> None:
    endpoint = f"ipc://{short_dir}/fair.sock"
    process = await asyncio.create_subprocess_exec(
        *ARBEES, "sim", "--markets", "3", "--rate", "0", "--fair-feed", endpoint,
        "--fair-interval", "0.1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        _, exports = await read_banner(process)
        assert exports["ARBEES_FAIR_FEED"] == endpoint
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                    http.get(f"{exports['ARBEES_SIM_CONTROL']}/fair") as response):
            fairs = await response.json()
        assert len(fairs) == 3
        first = min(fairs)
        one = subscriber(zmq_context, endpoint, fair_topic(first))
        every = subscriber(zmq_context, endpoint, TOPIC_PREFIX)
        stamps = []
        for _ in range(3):  # nothing moves at rate 0: these are the periodic rounds
            topic, value = await receive(one)
            assert topic == fair_topic(first)
            assert (value.game_id, value.fair, value.source) == (first, fairs[first], "sim")
            stamps.append(value.ts_ns)
        assert stamps == sorted(stamps) and len(set(stamps)) == 3
        heard: dict[str, float] = {}
        while set(heard) != set(fairs):
            topic, value = await receive(every)
            assert topic == fair_topic(value.game_id)
            heard[value.game_id] = value.fair
        assert heard == fairs
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
    assert process.returncode == 0, stderr.decode()
    assert b"arbees sim: stopped" in stdout
    assert list(short_dir.iterdir()) == [], "the feed's ipc file must go with the process"


async def test_a_moved_value_goes_out_at_once_and_only_on_its_games_topic(
        zmq_context: zmq.asyncio.Context) -> None:
    """With a one-hour interval, every value received after the first round was sent
    because it moved; `nba-1`'s subscriber never hears `nba-10`, whose id it prefixes."""
    values = {"nba-1": 0.25, "nba-10": 0.75}
    async with FairFeedPublisher(lambda: dict(values), "tcp://127.0.0.1:*", interval=3600) as feed:
        assert feed.endpoint.startswith("tcp://127.0.0.1:") and not feed.endpoint.endswith(":*")
        subscribers = {game: subscriber(zmq_context, feed.endpoint, fair_topic(game)) for game in values}
        heard: dict[str, list[float]] = {game: [] for game in values}
        set_to: dict[str, set[float]] = {game: {value} for game, value in values.items()}
        async with asyncio.timeout(10):
            while not all(heard.values()):  # the first round went out before anyone listened
                for game, value in values.items():
                    values[game] = round(value + 0.001, 6)
                    set_to[game].add(values[game])
                await asyncio.sleep(0.02)
                for game, sock in subscribers.items():
                    while await sock.poll(0):
                        topic, value = decoded(await sock.recv_multipart())
                        assert topic == fair_topic(game) and value.game_id == game
                        heard[game].append(value.fair)
        for game, fairs in heard.items():
            assert set(fairs) <= set_to[game]


@pytest.mark.parametrize(("endpoint", "message"), [
    ("udp://127.0.0.1:5601", "not an ipc:///path or tcp://host:port endpoint"),
    ("ipc://", "not an ipc:///path or tcp://host:port endpoint"),
    ("tcp://10.1.2.3:5601", "--allow-remote"),
    ("tcp://*:5601", "--allow-remote"),
])
def test_a_fair_feed_endpoint_beyond_this_machine_or_malformed_is_a_usage_error(
        endpoint: str, message: str) -> None:
    result = CliRunner().invoke(main, ["sim", "--fair-feed", endpoint])
    assert result.exit_code == 2
    assert message in result.output and "--fair-feed" in result.output


def test_an_ipc_path_in_use_is_refused_and_left_alone(short_dir: Path) -> None:
    taken = short_dir / "fair.sock"
    taken.write_text("someone else's")
    result = CliRunner().invoke(main, ["sim", "--markets", "1", "--fair-feed", f"ipc://{taken}"])
    assert result.exit_code == 1
    assert "in use" in result.output and str(taken) in result.output
    assert taken.read_text() == "someone else's"
