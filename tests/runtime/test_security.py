"""CurveZMQ, metrics and JSON logs on a real keyed cluster over loopback tcp; nothing secret leaks.

One cluster (simulators, broker, worker, shard, each its own process, every runtime
socket Curve) serves the tests of this module, in order: prices flow to the keyed
shard; a subscriber with an unauthorized key, or none, gets nothing and the worker
logs the denial; each role's metrics endpoint answers with the documented names and
moving counters; the broker logs JSON; and no log, status, metrics page or error
text contains the Kalshi key id, the Kalshi private key, or a Curve secret key.
(The across-hosts variant, in network namespaces, is `test_curve_netns.py`.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from broker import protocol
from broker.broker_client import ask_broker
from broker.keys_command import write_keys
from broker.security import load_keys
from tests.runtime.conftest import Cluster, ctrl_c_after, wait_for

MARKETS = 40
SETTLE = 40.0
ARBEES = [sys.executable, "-m", "broker"]
METRICS_LINE = re.compile(r"metrics: serving (http://127\.0\.0\.1:\d+/metrics)")


def free_tcp_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


class Secure:
    """The module's keyed cluster and what the tests need to reach it."""

    def __init__(self, cluster: Cluster, keys: Path, intruder: Path) -> None:
        self.cluster = cluster
        self.keys = keys
        self.intruder = intruder
        self.collected: list[str] = []
        """Texts the tests saw (status, metrics pages, error lines): grepped for secrets at the end."""

    def status(self) -> dict:
        reply = ask_broker(self.cluster.broker_endpoint, protocol.STATUS_REQUEST, timeout=5.0,
                           curve=load_keys(self.keys))
        return dict(reply.mapping("status"))

    def metrics_url(self, name: str) -> str:
        proc = next(p for p in self.cluster.procs if p.name == name)
        found = wait_for(lambda: METRICS_LINE.search(proc.output()), 20, f"{name}'s metrics endpoint")
        return found.group(1)

    def scrape(self, name: str) -> str:
        with urllib.request.urlopen(self.metrics_url(name), timeout=5) as response:
            text = response.read().decode()
        self.collected.append(text)
        return text


pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = Path(tmp_path_factory.mktemp("sec", numbered=True))
    keys, intruder = root / "keys", root / "intruder"
    write_keys(keys)
    write_keys(intruder)  # a well-formed key set this runtime has never authorized
    cluster = Cluster(root)
    try:
        cluster.sim()
        cluster.broker_endpoint = free_tcp_endpoint()
        curve = ("--curve-dir", str(keys), "--metrics-port", "0", "--heartbeat", "0.2")
        cluster.start("broker", "broker", "--endpoint", cluster.broker_endpoint, "--dead-after", "1.5",
                      "--log-format", "json", *curve, ready="listening on")
        cluster.start("worker-w0", "worker", "--id", "w0", "--broker", cluster.broker_endpoint, "--pub",
                      "tcp://127.0.0.1:*", "--snapshot", "tcp://127.0.0.1:*", "--log-level", "debug", *curve,
                      env=cluster.venue_env)
        cluster.start("shard-s0", "shard", "--id", "s0", "--broker", cluster.broker_endpoint, "--signals",
                      "tcp://127.0.0.1:*", "--fair-feed", cluster.fair_feed, "--log-level", "debug", *curve)
        yield Secure(cluster, keys, intruder)
    finally:
        cluster.stop_all()
    assert not cluster.unclean, f"did not stop on SIGTERM: {cluster.unclean}"


def _live_at_shard(secure: Secure) -> dict | None:
    status = secure.status()
    shard = status["shards"].get("s0")
    return status if shard and shard["counters"].get("live") == MARKETS else None


def test_keyed_roles_stream_prices_over_curve(secure: Secure) -> None:
    status = wait_for(lambda: _live_at_shard(secure), SETTLE, "all 40 markets LIVE at the keyed shard")
    assert status["workers"]["w0"]["pub"].startswith("tcp://127.0.0.1:")
    keyed = subprocess.run([*ARBEES, "status", "--json", "--broker", secure.cluster.broker_endpoint, "--curve-dir",
                            str(secure.keys)], capture_output=True, text=True, timeout=30, env=secure.cluster.env)
    assert keyed.returncode == 0, keyed.stderr
    assert len(json.loads(keyed.stdout)["assignment"]) == MARKETS
    secure.collected.append(keyed.stdout)
    for extra in ([], ["--curve-dir", str(secure.intruder)]):  # no keys; keys this runtime never authorized
        refused = subprocess.run([*ARBEES, "status", "--broker", secure.cluster.broker_endpoint, "--timeout", "1.5",
                                  *extra], capture_output=True, text=True, timeout=30, env=secure.cluster.env)
        assert refused.returncode == 1 and "no answer from the broker" in refused.stderr, refused.stderr
        secure.collected.append(refused.stderr)


def _subscriber(ctx: zmq.Context, endpoint: str, keys: Path | None, server_public: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        public, secret = zmq.auth.load_certificate(keys / "client.key_secret")
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def _drain(sock: zmq.Socket) -> int:
    count = 0
    while sock.poll(0):
        sock.recv_multipart()
        count += 1
    return count


def test_a_subscriber_without_the_right_key_gets_nothing_and_is_logged(secure: Secure) -> None:
    status = wait_for(lambda: _live_at_shard(secure), SETTLE, "the keyed cluster to settle")
    pub = status["workers"]["w0"]["pub"]
    server_public, _ = zmq.auth.load_certificate(secure.keys / "server.key")
    intruder_public, _ = zmq.auth.load_certificate(secure.intruder / "client.key")
    ctx = zmq.Context()
    socks = {name: _subscriber(ctx, pub, keys, server_public)
             for name, keys in (("keyed", secure.keys), ("intruder", secure.intruder), ("plain", None))}
    received = dict.fromkeys(socks, 0)
    try:
        # The keyed subscriber proves the window was long enough for prices to flow.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and received["keyed"] < 50:
            time.sleep(0.05)
            for name, sock in socks.items():
                received[name] += _drain(sock)
        time.sleep(0.5)
        for name, sock in socks.items():
            received[name] += _drain(sock)
    finally:
        for sock in socks.values():
            sock.close(linger=0)
        ctx.term()
    assert received["keyed"] >= 50, received
    assert received["intruder"] == 0 and received["plain"] == 0, received
    worker_log = next(p for p in secure.cluster.procs if p.name == "worker-w0").output()
    assert f"Curve: denied a client whose public key {intruder_public.decode()}" in worker_log


def _sample(page: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", page, re.MULTILINE)
    assert match, f"{name}{labels} not exposed:\n{page[:3000]}"
    return float(match.group(1))


BROKER_NAMES = ("arbees_broker_workers_alive", "arbees_broker_markets_assigned", "arbees_broker_markets_unassigned",
                "arbees_broker_markets_reassigned_total", "arbees_broker_control_rejected_total",
                "arbees_broker_heartbeat_age_seconds")
WORKER_NAMES = ("arbees_worker_venue_messages_total", "arbees_worker_venue_rejected_total",
                "arbees_worker_venue_reconnects_total", "arbees_worker_venue_resyncs_total", "arbees_worker_books",
                "arbees_worker_published_total")
SHARD_NAMES = ("arbees_shard_bus_gaps_total", "arbees_shard_records_total", "arbees_shard_rejected_total",
               "arbees_shard_signals_total", "arbees_shard_latency_seconds_bucket",
               "arbees_shard_bus_hop_seconds_bucket", "arbees_shard_broker_heartbeat_age_seconds")


def test_each_role_exposes_its_metrics_and_the_counters_move(secure: Secure) -> None:
    wait_for(lambda: _live_at_shard(secure), SETTLE, "the keyed cluster to settle")
    pages = {name: secure.scrape(name) for name in ("broker", "worker-w0", "shard-s0")}
    for name, expected in (("broker", BROKER_NAMES), ("worker-w0", WORKER_NAMES), ("shard-s0", SHARD_NAMES)):
        # A family with no sample yet (no rejection so far) still declares itself.
        missing = [m for m in expected if not re.search(rf"^(# TYPE )?{m}\b", pages[name], re.MULTILINE)]
        assert not missing, f"{name} lacks {missing}"
    assert _sample(pages["broker"], "arbees_broker_workers_alive") == 1
    assert _sample(pages["broker"], "arbees_broker_markets_assigned") == MARKETS
    books = re.findall(r'^arbees_worker_books\{status="\w+"\} (\S+)$', pages["worker-w0"], re.MULTILINE)
    assert sum(float(count) for count in books) == MARKETS
    applied = 'arbees_shard_records_total', '{outcome="applied"}'
    messages = "arbees_worker_venue_messages_total", '{venue="kalshi"}'
    rejected = "arbees_broker_control_rejected_total", '{reason="protocol"}'
    before = {"worker": _sample(pages["worker-w0"], *messages), "shard": _sample(pages["shard-s0"], *applied),
              "rejected": _sample(pages["broker"], *rejected)}
    ask_keyed = ask_broker(secure.cluster.broker_endpoint, "heartbeat", curve=load_keys(secure.keys))
    assert ask_keyed.kind == protocol.ERROR  # a heartbeat without a worker id: rejected and counted
    wait_for(lambda: _sample(secure.scrape("worker-w0"), *messages) > before["worker"], 20, "venue messages to grow")
    wait_for(lambda: _sample(secure.scrape("shard-s0"), *applied) > before["shard"], 20, "applied records to grow")
    wait_for(lambda: _sample(secure.scrape("broker"), *rejected) > before["rejected"], 20, "the rejection counted")
    shard_page = secure.scrape("shard-s0")
    assert _sample(shard_page, "arbees_shard_latency_seconds_count") > 0
    assert _sample(shard_page, "arbees_shard_bus_hop_seconds_count") > 0
    assert 0 <= _sample(shard_page, "arbees_shard_broker_heartbeat_age_seconds") < 5


def test_the_broker_logs_one_json_object_per_line(secure: Secure) -> None:
    lines = [line for line in next(p for p in secure.cluster.procs if p.name == "broker").output().splitlines()
             if line and not line.startswith("arbees broker: listening")]  # the banner is stdout, not a log line
    assert lines
    events = [json.loads(line) for line in lines]
    assert all(set(e) >= {"ts", "level", "logger", "message", "role"} and e["role"] == "broker" for e in events)
    assert any("registered" in e["message"] for e in events)


def _secrets(secure: Secure) -> dict[str, str]:
    env = secure.cluster.venue_env
    pem = Path(env["KALSHI_PRIVATE_KEY_PATH"]).read_text()
    found = {"kalshi key id": env["KALSHI_API_KEY_ID"]}
    found.update({f"kalshi private key line {i}": line for i, line in enumerate(pem.splitlines())
                  if len(line) >= 40 and "-----" not in line})
    for name in ("server", "client"):
        _, secret = zmq.auth.load_certificate(secure.keys / f"{name}.key_secret")
        found[f"curve {name} secret"] = secret.decode()
    return found


def _error_texts(secure: Secure, scratch: Path) -> list[str]:
    """What a user sees when keys are unusable: each must name the problem, and no secret."""
    kalshi_copy = scratch / "kalshi.pem"
    shutil.copyfile(secure.cluster.venue_env["KALSHI_PRIVATE_KEY_PATH"], kalshi_copy)
    kalshi_copy.chmod(0o644)
    open_keys = scratch / "keys"
    shutil.copytree(secure.keys, open_keys)
    (open_keys / "server.key_secret").chmod(0o640)
    runs = [([*ARBEES, "worker", "--broker", secure.cluster.broker_endpoint, "--private-key", str(kalshi_copy)],
             {**secure.cluster.venue_env, "KALSHI_PRIVATE_KEY_PATH": str(kalshi_copy)}, "chmod 600"),
            ([*ARBEES, "broker", "--endpoint", free_tcp_endpoint(), "--curve-dir", str(open_keys)], {},
             f"chmod 600 {open_keys / 'server.key_secret'}")]
    texts = []
    for args, env, expected in runs:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, env={**secure.cluster.env, **env})
        assert done.returncode != 0 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        texts.append(done.stdout + done.stderr)
    texts.append(repr(load_keys(secure.keys)))
    return texts


def test_no_secret_in_logs_status_metrics_or_errors(secure: Secure, tmp_path: Path) -> None:
    wait_for(lambda: _live_at_shard(secure), SETTLE, "the keyed cluster to settle")
    secrets = _secrets(secure)
    texts = [*secure.collected, json.dumps(secure.status()),
             *(secure.scrape(name) for name in ("broker", "worker-w0", "shard-s0")), *_error_texts(secure, tmp_path)]
    # The simulator's banner hands out its demo key id on purpose (`arbees sim`); every role's log is checked.
    texts += [p.output() for p in secure.cluster.procs if p.name != "sim"]
    assert sum(len(t) for t in texts) > 10_000  # a real amount of text was searched
    leaks = [(what, i) for what, secret in secrets.items() for i, text in enumerate(texts) if secret in text]
    assert not leaks, f"secrets found in collected texts: {leaks}"
    assert os.stat(secure.keys / "server.key_secret").st_mode & 0o077 == 0


def test_launch_runs_every_role_with_curve_and_json_logs(tmp_path: Path) -> None:
    """The launcher hands --curve-dir and --log-format to its children and follows them with its own keys."""
    write_keys(tmp_path / "keys")
    env = {**os.environ, "ARBEES_RUNTIME_DIR": str(tmp_path / "base"), "PYTHONUNBUFFERED": "1"}
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        launch = subprocess.Popen([*ARBEES, "launch", "--transport", "tcp", "--curve-dir", str(tmp_path / "keys"),
                                   "--log-format", "json", "--log-level", "info", "--status-every", "0.5"],
                                  stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
                                  start_new_session=True)
    with ctrl_c_after(launch):
        wait_for(lambda: "40/40 markets live" in out.read_text(), 60, "the keyed launch to show all markets live")
    assert launch.returncode == 0, err.read_text()[-3000:]
    roles: Counter[str] = Counter()
    for line in err.read_text().splitlines():
        child, _, rest = line.partition(": ")
        if child.startswith(("broker", "worker-", "shard-")) and rest.startswith("{"):
            event = json.loads(rest)
            assert set(event) >= {"ts", "level", "logger", "message", "role"}
            roles[event["role"]] += 1
    assert set(roles) == {"broker", "worker", "shard"}, roles
