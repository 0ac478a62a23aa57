"""What every long-running role command shares: logging, stop signals, and errors as one clear line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from broker.endpoints import EndpointError
from broker.log_format import LOG_FORMATS, JsonFormatter
from broker.security import ENV_CURVE_DIR, CurveKeys, SecurityError, load_keys
from broker.signals import install_stop_signals
from broker.universe import ConfigError

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, log_format: str = "text", role: str = "") -> None:
    """Log to stderr at `level`: text lines for people, or one JSON object per line (`broker.log_format`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role) if log_format == "json" else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def load_curve(curve_dir: Path | None) -> CurveKeys | None:
    """The keys of `--curve-dir` (None: no Curve), or one clear line saying what is wrong with them."""
    try:
        return None if curve_dir is None else load_keys(curve_dir)
    except SecurityError as exc:
        raise click.ClickException(str(exc)) from None


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


def run_foreground(main: Callable[[], T], out: IO[str]) -> T | None:
    """Run a command's `main` for a person at a terminal: None on Ctrl-C (before the signal
    handlers were installed, or a second one while shutting down) or when the reader of
    `out` went away (e.g. `| head`), which also keeps Python's final flush from raising."""
    try:
        return main()
    except KeyboardInterrupt:
        return None
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return None


log_level_option = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                                default="info", show_default=True, help="Log verbosity (stderr).")
log_format_option = click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
                                 help="text lines, or one JSON object per line (ts, level, logger, message, role).")
curve_dir_option = click.option("--curve-dir", envvar=ENV_CURVE_DIR, type=click.Path(file_okay=False, path_type=Path),
                                default=None, help="CurveZMQ keys from `arbees keys DIR`: encrypt and authenticate "
                                f"every runtime socket (env {ENV_CURVE_DIR}). Required to bind beyond loopback.")
insecure_option = click.option("--insecure-no-curve", "allow_remote", is_flag=True,
                               help="Bind beyond loopback WITHOUT Curve: anyone who reaches the port reads the "
                                    "prices and can talk to the runtime in plain text. Prefer --curve-dir.")
metrics_port_option = click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                                   help="Serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0: any free "
                                        "port, logged); off by default.")
heartbeat_option = click.option("--heartbeat", type=click.FloatRange(min=0.01), default=0.5, show_default=True,
                                help="Seconds between heartbeats to the broker.")


def role_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every role process takes: Curve keys (or the named risk of going without),
    metrics, and logging."""
    for option in reversed((insecure_option, curve_dir_option, metrics_port_option, log_level_option,
                            log_format_option)):
        command = option(command)
    return command
