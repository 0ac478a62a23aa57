"""The `arbees` command line: one click group, one sub-command per role or tool."""

from __future__ import annotations

import click

from broker.broker_command import broker
from broker.keys_command import keys
from broker.launch_command import launch
from broker.load_command import load
from broker.shard_command import shard
from broker.sim_command import sim
from broker.status_command import status
from broker.stream_command import stream
from broker.tail_command import tail
from broker.worker_command import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="arbees")
def main() -> None:
    """Arbees stream: Kalshi and Polymarket order books, streamed and normalized."""


for command in (broker, keys, launch, load, shard, sim, status, stream, tail, worker):
    main.add_command(command)
