"""How every role runs its loops: until told to stop, and never past a loop that failed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def run_until_stopped(tasks: list[asyncio.Task[None]], stop: asyncio.Event, *,
                            also: Iterable[asyncio.Event] = (), timeout: float | None = None) -> None:
    """Wait until `stop` (or any event in `also`) is set, `timeout` passes, or a task ends; then
    cancel and reap every task. A task that failed re-raises here: a role whose loop died
    must end (and be restarted) rather than run on half-working."""
    waiters = [asyncio.create_task(event.wait()) for event in (stop, *also)]
    try:
        done, _ = await asyncio.wait([*tasks, *waiters], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks:
                task.result()
    finally:
        for task in (*tasks, *waiters):
            task.cancel()
        await asyncio.gather(*tasks, *waiters, return_exceptions=True)
