"""Smoke run of the issue-10 load script: real processes, 2 markets, a few seconds.

It asserts that the run completes and that its JSON has the documented structure
and sane counts -- never timings, which depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MARKETS = 2
RATE = 10.0


@pytest.mark.timeout(120)
def test_load_script_reports_both_phases(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "scripts/load_20_markets.py", "--markets", str(MARKETS), "--rate", str(RATE),
         "--duration", "3", "--warmup", "0.5", "--poll-duration", "2.5", "--interval", "0.5", "--json", str(out)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WebSocket runtime" in done.stdout and "REST polling" in done.stdout
    results = json.loads(out.read_text())

    assert (results["markets"], results["rate_per_market"], results["interrupted"]) == (MARKETS, RATE, False)
    stream, polling = results["stream"], results["polling"]
    assert set(stream["latency_us"]) == {"p50", "p90", "p99", "p999", "max", "count"}
    assert set(polling["latency_us"]) == {"p50", "p90", "p99", "max", "count"}
    for hop in ("venue_to_worker", "worker_to_shard"):
        assert {"p50", "p99"} <= set(stream["hops_us"][hop])
        assert stream["hops_us"][hop]["count"] == stream["latency_us"]["count"]
    # Both venues' markets moved during the window and nearly every record is traced to its venue frame.
    assert stream["latency_us"]["count"] > 0 and stream["records"] >= stream["latency_us"]["count"]
    assert stream["unmatched"] <= stream["records"] // 2
    assert stream["rest_calls_per_min"] == 0
    assert stream["reconnects"] == 0 and stream["bus_gaps"] == 0
    assert {p["role"] for p in stream["processes"]} == {"sim", "broker", "worker-0", "shard"}
    assert all(p["peak_rss_mb"] > 0 and p["cpu_percent"] >= 0 for p in stream["processes"])
    # Polling made requests and saw changes; the ratio is computed from both medians.
    assert polling["rest_calls_per_min"] > 0 and polling["latency_us"]["count"] > 0
    assert polling["interval_s"] == 0.5
    assert results["ratio_p50"] == pytest.approx(polling["latency_us"]["p50"] / stream["latency_us"]["p50"], rel=0.01)
