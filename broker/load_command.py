"""`arbees load`: the issue-10 load run (streaming runtime vs REST polling), see `loadtest.run`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console

from broker.launcher import LaunchError
from loadtest.run import LoadConfig, run_load


@click.command("load")
@click.option("--markets", type=click.IntRange(min=1), default=20, show_default=True,
              help="Markets per venue (each simulated game is listed on both).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Book updates per second per market, uniform.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds of measured streaming (and, by default, of polling).")
@click.option("--warmup", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds streamed before the window opens.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="REST polling interval, seconds.")
@click.option("--poll-duration", type=click.FloatRange(min=0), default=None,
              help="Seconds of REST polling (default: --duration; 0 skips the phase).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated universe.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results (stable schema) to this file.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Plot both latency CDFs to this PNG (needs the `plot` extra: matplotlib).")
@click.option("--keep-logs", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the send, frame and latency logs in this directory.")
def load(markets: int, rate: float, duration: float, warmup: float, interval: float, poll_duration: float | None,
         workers: int, seed: int, json_path: Path | None, png_path: Path | None, keep_logs: Path | None) -> None:
    """Measure the runtime end to end under load, then REST polling on the same markets, side by side."""
    config = LoadConfig(markets=markets, rate=rate, duration=duration, warmup=warmup, interval=interval,
                        poll_duration=poll_duration, workers=workers, seed=seed, json_path=json_path,
                        png_path=png_path, keep_logs=keep_logs)
    try:
        console = Console()
        if not console.is_terminal:  # a pipe or a file: room for the table's columns, not 80
            console = Console(width=120)
        asyncio.run(run_load(config, console))
    except (LaunchError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
