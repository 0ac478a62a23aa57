"""Real processes for the runtime tests: simulators, broker, workers and shards, each `python -m broker ROLE`.

`Cluster` starts each role as its own process group (so a test can kill -9,
SIGSTOP or SIGINT exactly that process), talks to them only through their real
sockets (the broker's status, the simulators' control URL), and at teardown ends
exactly the processes it started, waits for them, and checks that no ipc file is
left in its private runtime directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest

from broker import protocol
from broker.broker_client import ask_broker

T = TypeVar("T")
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path, ipc_files: list[Path]) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.ipc_files = ipc_files
        """Its endpoints' files: removed by the harness only if it was killed (it could not clean up)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


class Cluster:
    """The processes of one test; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rundir = root / "run"
        self.rundir.mkdir(mode=0o700)
        self.procs: list[Proc] = []
        self.env = {**os.environ, "ARBEES_RUNTIME_DIR": str(root / "base"), "PYTHONUNBUFFERED": "1"}
        self.venue_env: dict[str, str] = {}
        self.broker_endpoint = ""
        self.sim_control = ""
        self.fair_feed = ""
        self.unclean: list[str] = []
        """Processes that did not stop on SIGTERM within STOP_TIMEOUT (a test failure)."""

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.rundir}/{name}"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None, ready: str | None = None,
              ipc: tuple[str, ...] = (), prefix: tuple[str, ...] = ()) -> Proc:
        """`prefix` runs the role under a wrapper that execs it (e.g. `ip netns exec NS`), keeping its pid."""
        log = self.root / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen([*prefix, sys.executable, "-m", "broker", *args], stdin=subprocess.DEVNULL,
                                 stdout=handle, stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                                 start_new_session=True)
        handle.close()
        proc = Proc(name, popen, log, [self.rundir / n for n in ipc])
        self.procs.append(proc)
        if ready is not None:
            wait_for(lambda: ready in proc.output() or popen.poll() is not None, READY_TIMEOUT, f"{name} to start")
            assert popen.poll() is None, f"{name} exited while starting:\n{proc.output()[-3000:]}"
        return proc

    def sim(self, *extra: str, markets: int = 20, rate: float = 5.0) -> Proc:
        self.fair_feed = self.endpoint("fair")
        proc = self.start("sim", "sim", "--markets", str(markets), "--rate", str(rate), "--fair-feed", self.fair_feed,
                          *extra, ready="Press Ctrl-C", ipc=("fair",))
        exports = dict(line[len("export "):].split("=", 1) for line in proc.output().splitlines()
                       if line.startswith("export "))
        self.venue_env = {k: v for k, v in exports.items() if k.startswith(("KALSHI_", "POLYMARKET_"))}
        self.sim_control = exports["ARBEES_SIM_CONTROL"]
        return proc

    def broker(self, *extra: str, markets: int = 20, dead_after: float = 1.5) -> Proc:
        self.broker_endpoint = self.endpoint("broker")
        return self.start("broker", "broker", "--endpoint", self.broker_endpoint, "--sim-markets", str(markets),
                          "--dead-after", str(dead_after), "--heartbeat", "0.2", *extra, ready="listening on",
                          ipc=("broker",))

    def worker(self, worker_id: str, *extra: str) -> Proc:
        return self.start(f"worker-{worker_id}", "worker", "--id", worker_id, "--broker", self.broker_endpoint,
                          "--pub", self.endpoint(f"{worker_id}-pub"), "--snapshot", self.endpoint(f"{worker_id}-snap"),
                          "--heartbeat", "0.2", *extra, env=self.venue_env,
                          ipc=(f"{worker_id}-pub", f"{worker_id}-snap"))

    def shard(self, shard_id: str, *extra: str) -> Proc:
        return self.start(f"shard-{shard_id}", "shard", "--id", shard_id, "--broker", self.broker_endpoint,
                          "--signals", self.endpoint(f"{shard_id}-sig"), "--fair-feed", self.fair_feed,
                          "--heartbeat", "0.2", *extra, ipc=(f"{shard_id}-sig",))

    # -- observing -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(ask_broker(self.broker_endpoint, protocol.STATUS_REQUEST, timeout=5.0).mapping("status"))

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.sim_control}/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def worker_view(self, status: dict[str, Any] | None = None) -> dict[str, tuple[str, list[Any]]]:
        """market -> (worker, [epoch, seq, status, age]) as the workers report them."""
        status = status or self.status()
        return {market: (worker_id, entry) for worker_id, info in status["workers"].items()
                for market, entry in info["counters"].get("markets", {}).items()}

    def shard_view(self, shard_id: str, status: dict[str, Any] | None = None) -> dict[str, list[Any] | None]:
        status = status or self.status()
        shard = status["shards"].get(shard_id)
        return {} if shard is None else shard["counters"].get("markets", {})

    def in_step(self, shard_ids: list[str], expected: int, *, exact: bool = False) -> dict[str, Any] | None:
        """The status if every market is owned by exactly one worker, which has published it, and each
        shard holds a record of that owner's current epoch for each of its markets; else None.

        With `exact` (meaningful while the simulators are paused), each shard must hold the
        worker's very latest record (same seq) and every market must be LIVE.
        """
        status = self.status()
        workers = self.worker_view(status)
        if len(status["assignment"]) != expected or status["unassigned"] or len(workers) != expected:
            return None
        if any(entry[1] < 1 or (exact and entry[2] != "live") for _, entry in workers.values()):
            return None
        seen = 0
        for shard_id in shard_ids:
            for market, held in self.shard_view(shard_id, status).items():
                worker_entry = workers.get(market)
                if held is None or worker_entry is None or held[0] != worker_entry[1][0]:
                    return None
                if exact and (held[1] != worker_entry[1][1] or held[2] != "live"):
                    return None
                seen += 1
        return status if seen == expected else None

    # -- teardown ----------------------------------------------------------------------

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.signal(signal.SIGCONT)
                proc.signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.unclean.append(proc.name)
                proc.signal(signal.SIGKILL)
                proc.popen.wait()
            if proc.popen.returncode == -signal.SIGKILL:
                for path in proc.ipc_files:
                    path.unlink(missing_ok=True)


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A short root: ipc paths are limited to ~107 bytes.
    root = Path(tmp_path_factory.mktemp("rt", numbered=True))
    running = Cluster(root)
    try:
        yield running
    finally:
        running.stop_all()
    assert not running.unclean, f"did not stop on SIGTERM: {running.unclean}"
    leftovers = list(running.rundir.iterdir())
    assert not leftovers, f"ipc files left behind: {leftovers}"


def next_arbitrage(game_id: str, signal_endpoints: list[str], trigger: Callable[[], None],
                   timeout: float = READY_TIMEOUT) -> dict[str, Any] | None:
    """Subscribe to `game_id`'s signals on the given shards, run `trigger` once the subscription
    has reached them, and return the first arbitrage signal that follows (None by `timeout`)."""
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, f"signal/{game_id}|".encode())
        for endpoint in signal_endpoints:
            sub.connect(endpoint)
        time.sleep(0.3)  # the subscription reaches the PUBs
        trigger()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sub.poll(500):
                body = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
                if body["kind"] == "arbitrage":
                    return body
        return None
    finally:
        sub.close(linger=0)
        ctx.term()


@contextlib.contextmanager
def ctrl_c_after(launch: subprocess.Popen[bytes]) -> Iterator[None]:
    """Run the body, then stop `arbees launch` as a user does (SIGINT, up to 30 s); its process
    group is killed only if it is still running after that, or if the body failed."""
    try:
        yield
        launch.send_signal(signal.SIGINT)
        launch.wait(timeout=30)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
