"""What a load run prints and writes: one rich table (streaming, REST polling, ratio), JSON, a PNG.

The JSON is the stable contract of issue 10 (keys only ever added); `None` stands
for a figure the run did not reach (an interrupted run, a phase skipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e3:,.1f} ms" if value >= 10_000 else f"{value:,.0f} µs"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(slow: float | None, fast: float | None) -> str:
    return "-" if not slow or not fast else f"{slow / fast:,.0f}×"


def results_table(results: dict[str, Any]) -> Table:
    stream, polling = results["stream"], results["polling"]
    s_lat, p_lat = stream["latency_us"], polling["latency_us"]
    table = Table(title=f"{results['markets']} markets per venue × {results['rate_per_market']:g} updates/s, "
                        f"{results['duration_s']:g} s, {results['workers']} worker(s)"
                        + (" — interrupted" if results.get("interrupted") else ""))
    table.add_column("")
    table.add_column("WebSocket runtime", justify="right")
    table.add_column(f"REST polling ({polling['interval_s']:g} s)", justify="right")
    table.add_column("polling / stream", justify="right")
    for name, label in (("p50", "latency p50"), ("p90", "latency p90"), ("p99", "latency p99"),
                        ("p999", "latency p99.9"), ("max", "latency max")):
        table.add_row(label, _us(s_lat.get(name)), _us(p_lat.get(name)), _ratio(p_lat.get(name), s_lat.get(name)))
    table.add_row("changes timed", _num(s_lat["count"]), _num(p_lat["count"]), "")
    table.add_row("book changes in the window", _num(stream["records"]), _num(polling["changes_made"]), "")
    for hop, label in (("venue_to_worker", "hop venue → worker book"), ("worker_to_shard", "hop worker → shard")):
        hop_us = stream["hops_us"][hop]
        table.add_row(f"{label} p50 / p99", f"{_us(hop_us['p50'])} / {_us(hop_us['p99'])}", "", "")
    table.add_row("throughput (records/s at the shard)", _num(stream["throughput_per_s"]), "", "")
    table.add_row("REST calls per minute", _num(stream["rest_calls_per_min"], 1),
                  _num(polling["rest_calls_per_min"], 1), "")
    table.add_row("reconnects / resyncs / bus gaps",
                  f"{stream['reconnects']} / {stream['resyncs']} / {stream['bus_gaps']}", "", "")
    for proc in stream["processes"]:
        table.add_row(f"  {proc['role']}: CPU %, peak RSS",
                      f"{_num(proc['cpu_percent'], 1)} %, {_num(proc['peak_rss_mb'], 1)} MB", "", "")
    return table


def print_results(results: dict[str, Any], console: Console) -> None:
    console.print(results_table(results))
    if results["stream"].get("unmatched"):
        console.print(f"[dim]{results['stream']['unmatched']} record(s) with no stamped venue frame behind them "
                      "(resyncs, trade prints: frames the simulators do not stamp) are not timed[/dim]")


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def plot_cdf(stream_ns: list[int], polling_ns: list[int], path: Path, title: str) -> None:
    """Both latency distributions as CDFs on a log time axis; ImportError without the `plot` extra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for samples, label in ((stream_ns, "WebSocket runtime (venue → shard)"),
                           (polling_ns, "REST polling (change → seen)")):
        if samples:
            ordered = sorted(s / 1e6 for s in samples)
            n = len(ordered)
            ax.step(ordered, [(k + 1) / n for k in range(n)], where="post", label=f"{label}, n={n:,}")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of book changes")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
