"""Polymarket simulator: the CLOB market WebSocket, CLOB REST and Gamma on one local port."""

from .frames import PolymarketFaultPlan
from .simulator import PolymarketSimulator

__all__ = ["PolymarketFaultPlan", "PolymarketSimulator"]
