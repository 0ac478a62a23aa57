"""Stop signals shared by the long-running commands (`arbees stream`, `arbees sim`).

Both commands shut down the same way on Ctrl-C or SIGTERM, so the handler lives
here once rather than in either command.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
