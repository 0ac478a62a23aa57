"""The soak's short version: 20 seconds of every venue fault and a kill every 5 s, then exact books.

It runs `scripts/soak.py` as a user would and checks its verdict and the shape of its
JSON report, never a duration: with seed 0 the three kills hit a shard, a worker and the
broker, so each role's restart is exercised on every CI run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.test_launch import alive

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.mark.timeout(420)
def test_a_short_soak_loses_no_market_and_ends_with_every_book_right(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(SOAK), "--seconds", "20", "--kill-every", "5", "--sample-every", "1",
                          "--json", str(report)], check=False, capture_output=True, text=True, timeout=400,
                         cwd=tmp_path)
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["markets_lost"] == 0, result["lost"]
    assert result["wrong_books"] == 0, result["wrong"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "markets lost (must be 0)" in run.stdout and "RSS per process instance" in run.stdout

    assert [k["role"] for k in result["kills"]] == ["shard", "worker", "broker"]
    assert sum(result["restarts"].values()) == len(result["kills"]), "a process died that was not killed"
    assert set(result["reconnects"]) == set(result["resyncs"]) == set(result["venue_gaps"]) == {"kalshi",
                                                                                                 "polymarket"}
    assert result["reconnects"]["kalshi"] > 0 and result["reconnects"]["polymarket"] > 0, "faults were on"
    assert result["published"] > 0 and isinstance(result["bus_gaps"], int)
    assert 0 <= result["live_share"] <= 1
    instances = result["rss"]
    assert {row["name"] for row in instances} == {"sim", "broker", "worker-w0", "worker-w1", "shard-s0", "shard-s1"}
    killed = {k["pid"] for k in result["kills"]}
    assert killed <= {row["pid"] for row in instances}, "every killed instance was sampled"
    assert len(instances) == 6 + len(killed), "each kill brought a new instance"
    for row in instances:
        assert row["samples"] >= 1 and row["peak_mb"] >= row["end_mb"] > 0
        assert (row["slope_mb_per_min"] is None) == (row["trend_ok"] is None)
    assert not [row["pid"] for row in instances if alive(row["pid"])], "the soak left processes behind"
