"""Across hosts: broker, worker and shard in three network namespaces joined by veth pairs, over tcp with Curve.

Each namespace is a host with its own addresses (10.201.x.y, private to the
namespaces this test creates; nothing is routed out of them). The simulators run
in the worker's namespace (the worker reaches them on its own loopback), every
runtime socket binds a namespace address and so must be a Curve server, and the
shard reaches the broker and the worker only over the veth links. Where network
namespaces are not available (not root, no `ip`, a sandbox that forbids them)
the test skips; the same checks over loopback tcp run in `test_security.py`.

    ns-b (broker 10.201.1.1) --10.201.1.0/24-- ns-w (worker, simulators; PUB 10.201.3.1)
    ns-b --10.201.2.0/24-- ns-s (shard 10.201.2.2)        ns-w --10.201.3.0/24-- ns-s
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.keys_command import write_keys
from tests.runtime.conftest import Cluster, wait_for

MARKETS = 40
SETTLE = 45.0
PROBE = str(Path(__file__).with_name("curve_probe.py"))
BROKER = "tcp://10.201.1.1:5570"
LINKS = (("b", "w", "10.201.1"), ("b", "s", "10.201.2"), ("w", "s", "10.201.3"))


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _why_no_netns() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"arbprobe{os.getpid()}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"this machine does not allow network namespaces: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class Hosts:
    """Three namespaces (b, w, s) wired as in the module docstring; `run(host)` is the prefix to run there."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.names = {host: f"arb{tag}{host}" for host in "bws"}
        self.tag = tag

    def run(self, host: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.names[host])

    def create(self) -> None:
        for name in self.names.values():
            self._check(_ip("netns", "add", name))
            self._check(_ip("-n", name, "link", "set", "lo", "up"))
        for left, right, net in LINKS:
            a, b = f"v{self.tag}{left}{right}", f"v{self.tag}{right}{left}"
            # Created inside a namespace and moved to the other: nothing ever appears in the host's namespace.
            self._check(_ip("-n", self.names[left], "link", "add", a, "type", "veth", "peer", "name", b, "netns",
                            self.names[right]))
            for host, dev, last in ((left, a, 1), (right, b, 2)):
                self._check(_ip("-n", self.names[host], "addr", "add", f"{net}.{last}/24", "dev", dev))
                self._check(_ip("-n", self.names[host], "link", "set", dev, "up"))
        # The shard reaches the broker's address (on the b-w link) through its own link to ns-b.
        self._check(_ip("-n", self.names["s"], "route", "add", "10.201.1.0/24", "via", "10.201.2.1"))

    def delete(self) -> None:
        for name in self.names.values():
            _ip("netns", "del", name)  # also removes the veth ends inside it

    @staticmethod
    def _check(done: subprocess.CompletedProcess[str]) -> None:
        assert done.returncode == 0, f"{done.args}: {done.stderr}"


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _why_no_netns()
    if reason is not None:
        pytest.skip(f"{reason}; the loopback variant (test_security.py) covers Curve instead")
    made = Hosts()
    try:
        made.create()
        yield made
    finally:
        made.delete()


def _status(hosts: Hosts, keys: Path, env: dict[str, str]) -> dict | None:
    done = subprocess.run([*hosts.run("s"), sys.executable, "-m", "broker", "status", "--json", "--broker", BROKER,
                           "--curve-dir", str(keys), "--timeout", "2"], capture_output=True, text=True, timeout=30,
                          env=env)
    return json.loads(done.stdout) if done.returncode == 0 else None


@pytest.mark.timeout(150)
def test_roles_on_three_hosts_stream_over_curve_and_refuse_an_unknown_key(hosts: Hosts, cluster: Cluster,
                                                                         tmp_path: Path) -> None:
    keys, intruder = tmp_path / "keys", tmp_path / "intruder"
    write_keys(keys)
    write_keys(intruder)
    curve = ("--curve-dir", str(keys), "--heartbeat", "0.2")
    sim = cluster.start("sim", "sim", "--markets", "20", "--rate", "5", ready="Press Ctrl-C", prefix=hosts.run("w"))
    exports = dict(line[len("export "):].split("=", 1) for line in sim.output().splitlines()
                   if line.startswith("export "))
    venue_env = {k: v for k, v in exports.items() if k.startswith(("KALSHI_", "POLYMARKET_"))}
    cluster.start("broker", "broker", "--endpoint", BROKER, "--dead-after", "1.5", *curve, ready="listening on",
                  prefix=hosts.run("b"))
    cluster.start("worker-w0", "worker", "--id", "w0", "--broker", BROKER, "--pub", "tcp://10.201.3.1:*",
                  "--snapshot", "tcp://10.201.3.1:*", *curve, env=venue_env, prefix=hosts.run("w"))
    cluster.start("shard-s0", "shard", "--id", "s0", "--broker", BROKER, "--signals", "tcp://10.201.2.2:*", *curve,
                  prefix=hosts.run("s"))

    def all_live() -> dict | None:
        status = _status(hosts, keys, cluster.env)
        shard = None if status is None else status["shards"].get("s0")
        return status if shard and shard["counters"].get("live") == MARKETS else None

    status = wait_for(all_live, SETTLE, "all 40 markets LIVE at the shard in its own namespace")
    pub = status["workers"]["w0"]["pub"]
    assert pub.startswith("tcp://10.201.3.1:")

    def probe(*key: str) -> int:
        done = subprocess.run([*hosts.run("s"), sys.executable, PROBE, pub, str(keys / "server.key"), "3", *key],
                              capture_output=True, text=True, timeout=30, env=cluster.env)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert probe(str(keys / "client.key_secret")) > 0  # the authorized key receives: the window is meaningful
    assert probe(str(intruder / "client.key_secret")) == 0
    assert probe() == 0  # plain text, no key at all
    worker_log = next(p for p in cluster.procs if p.name == "worker-w0").output()
    intruder_public = (intruder / "client.key").read_text().split('public-key = "')[1].split('"')[0]
    assert f"Curve: denied a client whose public key {intruder_public}" in worker_log
    assert _status(hosts, intruder, cluster.env) is None  # nor can it ask the broker anything
