"""Operations helpers: the shard's latency histograms, the JSON log format, the metrics endpoint."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.core import CounterMetricFamily, Metric

from broker.endpoints import EndpointError
from broker.log_format import JsonFormatter
from broker.metrics import serve_metrics
from markets.models import MarketPrice, Platform
from shard.histogram import BucketHistogram, BusLatency


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = BucketHistogram((1_000, 2_000, 5_000))
    for ns in (-50, 500, 1_000, 1_500, 4_000, 9_000, 9_000):
        histogram.observe(ns)
    assert histogram.buckets() == [("1e-06", 3), ("2e-06", 4), ("5e-06", 5), ("+Inf", 7)]
    assert histogram.sum_ns == -50 + 500 + 1_000 + 1_500 + 4_000 + 9_000 + 9_000


@pytest.mark.parametrize("bounds", [(), (2, 1), (1, 1)])
def test_histogram_bounds_must_increase(bounds: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        BucketHistogram(bounds)


def test_bus_latency_measures_from_the_workers_receive_and_publish_times() -> None:
    latency = BusLatency()
    record = MarketPrice("M", 0.4, 0.5, 1.0, 1.0, Platform.KALSHI, recv_ts_ns=1_000_000, publish_ts_ns=1_200_000)
    latency.observe(1_300_000, record)
    latency.observe(1_300_000, record._replace(recv_ts_ns=0, publish_ts_ns=0))  # unstamped: not a sample
    assert latency.end_to_end.sum_ns == 300_000 and latency.end_to_end.buckets()[-1] == ("+Inf", 1)
    assert latency.bus_hop.sum_ns == 100_000 and latency.bus_hop.buckets()[-1] == ("+Inf", 1)


def test_json_log_lines_are_one_object_each_with_the_role() -> None:
    formatter = JsonFormatter("worker")
    record = logging.LogRecord("workers.worker", logging.WARNING, __file__, 1, "two\nlines %s", ("here",), None)
    line = formatter.format(record)
    assert "\n" not in line
    event = json.loads(line)
    assert event["message"] == "two\nlines here" and event["role"] == "worker"
    assert event["level"] == "WARNING" and event["logger"] == "workers.worker" and event["ts"].endswith("+00:00")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(formatter.format(failed))["exception"]


async def test_metrics_serve_on_loopback_and_a_busy_port_is_one_clear_error() -> None:
    class One:
        def collect(self) -> Iterator[Metric]:
            yield CounterMetricFamily("arbees_test_things", "Things.", value=3)

    async with serve_metrics(0, One()) as port:
        assert port is not None
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200 and "arbees_test_things_total 3.0" in await response.text()
        with pytest.raises(EndpointError, match=rf"127\.0\.0\.1:{port}.*--metrics-port"):
            async with serve_metrics(port, One()):
                pass
    async with serve_metrics(None, One()) as off:
        assert off is None
