"""The `arbees` command line: one click group, one sub-command per role or tool."""

from __future__ import annotations

import click

from broker.sim_command import sim
from broker.stream_command import stream


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="arbees")
def main() -> None:
    """Arbees stream: Kalshi and Polymarket order books, streamed and normalized."""


main.add_command(sim)
main.add_command(stream)
