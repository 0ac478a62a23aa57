"""The Kalshi venue simulator (WebSocket v2 + REST v2)."""

from markets.sim.kalshi.rest import RateLimit, RecordedOrder
from markets.sim.kalshi.simulator import KalshiSimulator
from markets.sim.kalshi.ws import CommandLimits

__all__ = ["CommandLimits", "KalshiSimulator", "RateLimit", "RecordedOrder"]
