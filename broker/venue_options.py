"""The venue endpoint options every command that talks to the venues shares (`stream`, `worker`, `launch`).

Each venue is configured by URLs (and, for Kalshi, credentials) from options or
the environment variables `arbees sim` prints. A venue with no option set at all
is *unconfigured* (None): the commands then use the simulators, or stream only
the venues that are configured. Any option of a venue configures it, with the
production URLs as defaults for what is not given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click

from broker.price_sources import KalshiEndpoint, PolymarketEndpoint
from markets.kalshi.auth import (
    ENV_KEY_ID,
    ENV_PRIVATE_KEY_PATH,
    KalshiAuthError,
    KalshiCredentials,
)
from markets.kalshi.client import KALSHI_REST_URL
from markets.kalshi.ws_client import KALSHI_WS_URL
from markets.polymarket.client import POLYMARKET_CLOB_URL, POLYMARKET_GAMMA_URL
from markets.polymarket.ws_client import POLYMARKET_WS_URL

VENUE_ENV = ("KALSHI_WS_URL", "KALSHI_REST_URL", ENV_KEY_ID, ENV_PRIVATE_KEY_PATH, "POLYMARKET_WS_URL",
             "POLYMARKET_CLOB_URL", "POLYMARKET_GAMMA_URL")
"""The environment variables the options read (a launcher passes exactly these to its workers)."""


@dataclass(frozen=True)
class VenueEndpoints:
    kalshi: KalshiEndpoint | None
    polymarket: PolymarketEndpoint | None
    given: dict[str, str] = field(default_factory=dict)
    """The options as given, by environment variable name: what a launcher hands its workers."""

    @property
    def configured(self) -> bool:
        return self.kalshi is not None or self.polymarket is not None


LIVE_ENV = {"KALSHI_WS_URL": KALSHI_WS_URL, "KALSHI_REST_URL": KALSHI_REST_URL,
            "POLYMARKET_WS_URL": POLYMARKET_WS_URL, "POLYMARKET_CLOB_URL": POLYMARKET_CLOB_URL,
            "POLYMARKET_GAMMA_URL": POLYMARKET_GAMMA_URL}
"""The production endpoints, as the variables a worker reads (`arbees launch --live`)."""

_CONFIG_KEYS = {"kalshi": {"ws_url": "KALSHI_WS_URL", "rest_url": "KALSHI_REST_URL", "key_id": ENV_KEY_ID,
                           "private_key": ENV_PRIVATE_KEY_PATH},
                "polymarket": {"ws_url": "POLYMARKET_WS_URL", "clob_url": "POLYMARKET_CLOB_URL",
                               "gamma_url": "POLYMARKET_GAMMA_URL"}}


def env_from_config(config: dict[str, Any], source: str) -> dict[str, str]:
    """The `[kalshi]` / `[polymarket]` tables of a config file as the variables the venue options read.

    `private_key` is a path to the PEM file (never the key itself: config files get shared).
    """
    env: dict[str, str] = {}
    for venue, keys in _CONFIG_KEYS.items():
        table = config.get(venue)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise click.ClickException(f"{source}: [{venue}] must be a table")
        unknown = set(table) - set(keys)
        if unknown:
            raise click.ClickException(f"{source}: [{venue}] has unknown field(s) {', '.join(sorted(unknown))}; "
                                       f"known: {', '.join(keys)}")
        for key, value in table.items():
            if not isinstance(value, str) or not value:
                raise click.ClickException(f"{source}: [{venue}] {key} must be a non-empty string")
            env[keys[key]] = value
    return env


def _check_url(value: str | None, schemes: tuple[str, ...], option: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise click.BadParameter(f"{value!r} is not a {'/'.join(schemes)} URL", param_hint=option)
    return value


def kalshi_endpoint(ws_url: str | None, rest_url: str | None, key_id: str | None,
                    private_key: str | None) -> KalshiEndpoint | None:
    """The Kalshi endpoint, or None (unconfigured) when nothing was given."""
    ws_url = _check_url(ws_url, ("ws", "wss"), "--kalshi-ws-url")
    rest_url = _check_url(rest_url, ("http", "https"), "--kalshi-rest-url")
    if not any((ws_url, rest_url, key_id, private_key)):
        return None
    try:
        credentials = KalshiCredentials.resolve(key_id, private_key, environ={})
    except KalshiAuthError as exc:
        hint = f" (use --key-id/--private-key or {ENV_KEY_ID}/{ENV_PRIVATE_KEY_PATH})"
        raise click.ClickException(f"{exc}{hint}") from None
    return KalshiEndpoint(rest_url or KALSHI_REST_URL, ws_url or KALSHI_WS_URL, credentials)


def polymarket_endpoint(ws_url: str | None, clob_url: str | None,
                        gamma_url: str | None) -> PolymarketEndpoint | None:
    """The Polymarket endpoint, or None when no Polymarket option was given."""
    ws_url = _check_url(ws_url, ("ws", "wss"), "--polymarket-ws-url")
    clob_url = _check_url(clob_url, ("http", "https"), "--polymarket-clob-url")
    gamma_url = _check_url(gamma_url, ("http", "https"), "--polymarket-gamma-url")
    if not any((ws_url, clob_url, gamma_url)):
        return None
    return PolymarketEndpoint(clob_url or POLYMARKET_CLOB_URL, gamma_url or POLYMARKET_GAMMA_URL,
                              ws_url or POLYMARKET_WS_URL)


def parse_id_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """Ids from repeated and/or comma-separated option values, deduplicated in order."""
    ids = (t.strip() for v in values for t in v.split(","))
    return tuple(dict.fromkeys(t for t in ids if t))


_OPTIONS = (
    click.option("--kalshi-ws-url", envvar="KALSHI_WS_URL", show_envvar=True,
                 help="Kalshi WebSocket URL (default: production when any Kalshi option is set)."),
    click.option("--kalshi-rest-url", envvar="KALSHI_REST_URL", show_envvar=True,
                 help="Kalshi REST base URL (default: production when any Kalshi option is set)."),
    click.option("--key-id", envvar=ENV_KEY_ID, show_envvar=True, help="Kalshi API key id."),
    click.option("--private-key", envvar=ENV_PRIVATE_KEY_PATH, show_envvar=True,
                 help="Kalshi private key PEM file (PKCS#1 or PKCS#8, mode 0600)."),
    click.option("--polymarket-ws-url", envvar="POLYMARKET_WS_URL", show_envvar=True,
                 help="Polymarket market-channel URL (default: production when any Polymarket option is set)."),
    click.option("--polymarket-clob-url", envvar="POLYMARKET_CLOB_URL", show_envvar=True,
                 help="Polymarket CLOB REST URL (default: production when any Polymarket option is set)."),
    click.option("--polymarket-gamma-url", envvar="POLYMARKET_GAMMA_URL", show_envvar=True,
                 help="Polymarket Gamma REST URL (default: production when any Polymarket option is set)."),
)


def venue_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the venue options to a click command and hand it one `venues: VenueEndpoints` argument."""

    @functools.wraps(command)
    def wrapper(*args: Any, kalshi_ws_url: str | None, kalshi_rest_url: str | None, key_id: str | None,
                private_key: str | None, polymarket_ws_url: str | None, polymarket_clob_url: str | None,
                polymarket_gamma_url: str | None, **kwargs: Any) -> Any:
        values = (kalshi_ws_url, kalshi_rest_url, key_id, private_key, polymarket_ws_url, polymarket_clob_url,
                  polymarket_gamma_url)
        venues = VenueEndpoints(kalshi_endpoint(kalshi_ws_url, kalshi_rest_url, key_id, private_key),
                                polymarket_endpoint(polymarket_ws_url, polymarket_clob_url, polymarket_gamma_url),
                                {name: value for name, value in zip(VENUE_ENV, values, strict=True) if value})
        return command(*args, venues=venues, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
