"""Stop signals shared by the long-running commands (`arbees stream`, `sim`, and every role).

All of them shut down the same way on Ctrl-C or SIGTERM, so the handler lives here
once. A role started by `arbees launch` also stops when its launcher is gone
(`ARBEES_PARENT_PID`): a launcher killed outright must not leave orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
ENV_PARENT_PID = "ARBEES_PARENT_PID"
PARENT_CHECK_INTERVAL = 0.5


def install_stop_signals(stop: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM sets `stop` for a clean shutdown; a second one is not ignored.

    The first signal also removes the handlers, restoring the default actions
    (KeyboardInterrupt for SIGINT, termination for SIGTERM), so that if the
    clean shutdown ever hangs, pressing Ctrl-C again still ends the process.
    """
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-POSIX / non-main thread
            loop.add_signal_handler(sig, on_signal)
    parent = os.environ.get(ENV_PARENT_PID)
    if parent and parent.isdigit():
        watcher = loop.create_task(_watch_parent(int(parent), stop), name="parent-watch")
        stop_waiter = loop.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _: watcher.cancel())


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Set `stop` once the launcher that started this process is gone (we were re-parented)."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            stop.set()
            return
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
