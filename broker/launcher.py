"""Supervised child processes for `arbees launch`: start in order, restart with backoff, stop in order.

Each child is a fresh `python -m broker ROLE ...` process (spawned, never forked
from a process that already runs ZeroMQ), in its own session so that a Ctrl-C on
the terminal reaches only the launcher, which then stops the children in order:
shards, workers, broker, simulators -- consumers before producers, so nothing logs
a flood of errors about a peer that went first. Every child also carries
`ARBEES_PARENT_PID` and stops by itself if the launcher disappears.

A child that exits while the launcher is running is restarted after a backoff
(`markets.backoff`, reset once it has stayed up for `healthy_after`), and counted.
Its ipc files are removed first: it is dead (we reaped it), so they are stale,
and its successor must be able to bind the same endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from broker.endpoints import remove_ipc_file
from broker.signals import ENV_PARENT_PID
from markets.backoff import backoff_delay

log = logging.getLogger(__name__)

STOP_TIMEOUT = 3.0
READY_TIMEOUT = 30.0
LOG_TAIL = 200


class LaunchError(RuntimeError):
    """A child could not be started; the message says which and why (with its last output)."""


@dataclass
class Child:
    """One supervised process and how to start it again."""

    name: str
    args: list[str]
    env: dict[str, str]
    ready_marker: str | None = None
    """A stdout line containing this means the child is up (None: up as soon as it runs)."""
    ipc_files: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    banner: list[str] = field(default_factory=list)
    """Its stdout lines up to the ready marker (the simulators' URLs, the broker's endpoint)."""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    """Owns the children; `on_output(child, line)` receives every line they write on stderr."""

    def __init__(self, on_output: Callable[[Child, str], None] | None = None, *, backoff_initial: float = 0.5,
                 backoff_max: float = 10.0, healthy_after: float = 30.0) -> None:
        self.children: list[Child] = []
        self.on_output = on_output
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.stopping = False
        self.output: deque[str] = deque(maxlen=LOG_TAIL)
        self._watchers: list[asyncio.Task[None]] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.children)

    async def start(self, child: Child) -> Child:
        """Start `child` and wait for its ready line; LaunchError (with its output) if it dies or stalls first."""
        await self._spawn(child)
        self.children.append(child)
        self._watchers.append(asyncio.create_task(self._supervise(child), name=f"supervise-{child.name}"))
        return child

    async def _spawn(self, child: Child) -> None:
        for endpoint in child.ipc_files:
            remove_ipc_file(endpoint)
        env = {**os.environ, **child.env, ENV_PARENT_PID: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broker", *child.args, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        child.started_at = time.monotonic()
        child.banner = []
        process = child.process
        assert process.stdout is not None and process.stderr is not None
        self._read(child, process.stderr)
        if child.ready_marker is None:
            self._read(child, process.stdout)
            return
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while True:
                    raw = await process.stdout.readline()
                    if not raw:
                        await process.wait()
                        raise LaunchError(f"{child.name} exited with status {process.returncode} while starting"
                                          + self._last_words(child))
                    line = raw.decode(errors="replace").rstrip()
                    child.banner.append(line)
                    if child.ready_marker in line:
                        break
        except TimeoutError:
            await self._terminate(child)
            raise LaunchError(f"{child.name} did not report ready within {READY_TIMEOUT:g} s"
                              + self._last_words(child)) from None
        self._read(child, process.stdout)

    def _read(self, child: Child, stream: asyncio.StreamReader) -> None:
        async def pump() -> None:
            while raw := await stream.readline():
                line = f"{child.name}: {raw.decode(errors='replace').rstrip()}"
                self.output.append(line)
                if self.on_output is not None:
                    self.on_output(child, line)

        task = asyncio.create_task(pump(), name=f"read-{child.name}")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    def _last_words(self, child: Child) -> str:
        lines = [line for line in self.output if line.startswith(f"{child.name}: ")][-5:] + child.banner[-5:]
        return (":\n  " + "\n  ".join(lines)) if lines else ""

    async def _supervise(self, child: Child) -> None:
        attempt = 0
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping:
                return
            if time.monotonic() - child.started_at >= self.healthy_after:
                attempt = 0
            delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max, self._rng)
            attempt += 1
            child.restarts += 1
            log.warning("%s (pid %s) exited with status %s; restart #%d in %.1f s", child.name, child.pid, code,
                        child.restarts, delay)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                await self._spawn(child)
            except LaunchError as exc:
                log.error("restarting %s failed: %s", child.name, exc)
                child.started_at = time.monotonic()

    async def stop(self, order: Sequence[Sequence[Child]]) -> None:
        """Stop groups of children one group after the other (each group at once), then every straggler."""
        self.stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        seen: set[int] = set()
        for group in [*order, self.children]:
            pending = [c for c in group if id(c) not in seen]
            seen.update(id(c) for c in pending)
            await asyncio.gather(*(self._terminate(c) for c in pending))
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for child in self.children:
            for endpoint in child.ipc_files:
                remove_ipc_file(endpoint)

    async def _terminate(self, child: Child) -> None:
        """SIGTERM its process group, wait, then SIGKILL it; always reap the process."""
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            log.warning("%s (pid %d) did not stop within %.0f s; killing it", child.name, process.pid, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
