"""What every long-running role command shares: logging, stop signals, and errors as one clear line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

import click

from broker.endpoints import EndpointError
from broker.signals import install_stop_signals
from broker.universe import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr, format=LOG_FORMAT)


def run_role(role: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `role(stop)` until it returns; SIGINT/SIGTERM set `stop`. Known failures exit 1 with one line."""

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await role(stop)

    try:
        asyncio.run(main())
    except (EndpointError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        return


log_level_option = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                                default="info", show_default=True, help="Log verbosity (stderr).")
