"""The load run's pure parts: frame keys, the exact log join, percentiles, polling attribution."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from loadtest.analysis import join_logs, summary_us
from loadtest.instrument import FrameLog, LatencyLog, flush_every, frame_keys, read_latency_log
from loadtest.polling import Timeline
from markets.models import MarketPrice, Platform


def test_frame_keys_follow_the_simulators_send_log_keys() -> None:
    delta = orjson.dumps({"type": "orderbook_delta", "sid": 3, "seq": 41,
                          "msg": {"market_ticker": "KX-A", "price_dollars": "0.41", "delta_fp": "5"}}).decode()
    assert frame_keys("kalshi", delta) == [("KX-A", "3:41")]
    assert frame_keys("kalshi", '{"id": 1, "type": "subscribed", "msg": {"sid": 3}}') == []
    change = orjson.dumps({"event_type": "price_change", "market": "0xc", "price_changes": [
        {"asset_id": "111", "hash": "h1"}, {"asset_id": "222", "hash": "h2"}]}).decode()
    assert frame_keys("polymarket", change) == [("111", "h1"), ("222", "h2")]
    dump = orjson.dumps([{"event_type": "book", "asset_id": "111", "hash": "b1"}]).decode()
    assert frame_keys("polymarket", dump) == [("111", "b1")]
    assert frame_keys("polymarket", "PONG") == [] and frame_keys("kalshi", "{not json") == []


class FakeClient:
    def __init__(self) -> None:
        self.handled: list[tuple[str, int]] = []

    def _handle_message(self, data: str, recv_ns: int) -> None:
        self.handled.append((data, recv_ns))


def price(market_id: str, recv_ns: int, publish_ns: int, seq: int = 1) -> MarketPrice:
    return MarketPrice(market_id, 0.4, 0.5, 10.0, 10.0, Platform.KALSHI, recv_ts_ns=recv_ns,
                       publish_ts_ns=publish_ns, seq=seq, epoch=1)


def delta(sid: int, seq: int, ticker: str) -> str:
    return orjson.dumps({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": {"market_ticker": ticker}}).decode()


async def test_logs_join_each_record_to_the_frame_that_produced_it(tmp_path: Path) -> None:
    frames, latency = FrameLog(tmp_path / "frames.tsv"), LatencyLog(tmp_path / "latency.tsv")
    client = FakeClient()
    frames.attach("kalshi", client)
    # Two frames of one market sent back to back; the record comes from the FIRST one (recv 1_100),
    # read after the second was already sent (1_050): a nearest-send guess would be 50 ns off.
    (tmp_path / "send.tsv").write_text("kalshi\tKX-A\t1:1\t1000\nkalshi\tKX-A\t1:2\t1050\n")  # SendLog's layout
    async with flush_every(frames), flush_every(latency):
        client._handle_message(delta(1, 1, "KX-A"), 1_100)
        client._handle_message(delta(1, 2, "KX-A"), 1_200)
        latency.add(price("KX-A", 1_100, 1_300), 1_500)
        latency.add(price("KX-A", 9_999, 10_000, seq=2), 10_400)  # a resync's record: no frame behind it
        latency.add(price("KX-A", 1_200, 1_250, seq=3), 99_000)  # outside the window
    assert [data for data, _ in client.handled] == [delta(1, 1, "KX-A"), delta(1, 2, "KX-A")]
    assert [r.seq for r in read_latency_log(latency.path)] == [1, 2, 3]

    joined = join_logs(tmp_path / "send.tsv", [frames.path], latency.path, 0, 50_000)
    assert (joined.records, joined.unmatched) == (2, 1)
    assert joined.end_to_end == [500] and joined.venue_to_worker == [100] and joined.worker_to_shard == [200]


def test_summary_is_nearest_rank_in_microseconds() -> None:
    samples = [k * 1_000 for k in range(1, 1001)]  # 1..1000 us
    summary = summary_us(samples)
    assert summary == {"p50": 501.0, "p90": 901.0, "p99": 991.0, "p999": 1000.0, "max": 1000.0, "count": 1000}
    assert summary_us([], ("p50",)) == {"p50": None, "max": None, "count": 0}


def test_a_poll_sees_every_change_since_the_previous_poll_as_late_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = Timeline()
    clock = iter([100, 200, 300, 400])
    monkeypatch.setattr("loadtest.polling.time.time_ns", lambda: next(clock))
    for bid in (0.40, 0.41, 0.40, 0.42):
        timeline.add(MarketPrice("KX-A", bid, 0.5, 1.0, 1.0, Platform.KALSHI))
    top_40 = (0.40, 0.5, 1.0, 1.0)
    # The top 0.40 at 350 is the one that became current at 300 (transition 2), not the first one.
    assert timeline.index_of("KX-A", top_40, 350) == 2
    assert timeline.index_of("KX-A", top_40, 150) == 0
    assert timeline.index_of("KX-A", (0.99, 0.5, 1.0, 1.0), 350) is None
    assert timeline.changes_between(150, 400) == 2


def test_flush_every_writes_while_running_and_closes(tmp_path: Path) -> None:
    log = LatencyLog(tmp_path / "l.tsv")

    async def run() -> str:
        async with flush_every(log, interval=0.01):
            log.add(price("KX-A", 1, 2), 3)
            for _ in range(500):
                await asyncio.sleep(0.01)
                if log.path.read_text():
                    return log.path.read_text()
        return ""

    assert asyncio.run(run()) == "kalshi\tKX-A\t1\t1\t1\t2\t3\n"
    assert log._file.closed
