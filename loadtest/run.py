"""One load run: stream through the real runtime, then poll over REST, on the same simulators.

Phases (each ends early on Ctrl-C / SIGTERM, and whatever was measured is still
reported): start the simulators at a fixed uniform rate (`arbees sim --rate`,
round-robin: no quiet-market mix); start broker, workers and one shard; wait
until the shard holds every market; let it settle for `warmup` seconds; measure
for `duration` seconds (process CPU/RSS and the runtime's counters sampled at both
ends of the window); stop the roles so their logs are flushed; join the logs; then
poll the same markets over REST for `poll_duration` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from broker.price_sources import KalshiEndpoint, PolymarketEndpoint
from broker.signals import install_stop_signals
from broker.universe import sim_games
from loadtest import procstats
from loadtest.analysis import StreamLatencies, join_logs, summary_us
from loadtest.polling import PollingResult, measure_polling
from loadtest.report import plot_cdf, print_results, write_json
from loadtest.runtime import Runtime, runtime_counters
from markets.kalshi.auth import KalshiCredentials


@dataclass(frozen=True)
class LoadConfig:
    markets: int = 20
    rate: float = 20.0
    duration: float = 30.0
    warmup: float = 2.0
    interval: float = 1.0
    poll_duration: float | None = None
    """Seconds of REST polling (default: `duration`); 0 skips the phase."""
    workers: int = 1
    seed: int = 0
    json_path: Path | None = None
    png_path: Path | None = None
    keep_logs: Path | None = None
    """Write the logs here and keep them (default: a temporary directory, removed)."""

    def __post_init__(self) -> None:
        problems = [f"{name} must be > 0, got {value!r}" for name, value in
                    (("markets", self.markets), ("rate", self.rate), ("duration", self.duration),
                     ("interval", self.interval), ("workers", self.workers)) if not value > 0]
        if self.warmup < 0 or (self.poll_duration is not None and self.poll_duration < 0):
            problems.append("warmup and poll duration must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


async def run_load(config: LoadConfig, console: Console) -> dict[str, Any]:
    """Run every phase and return the results document (see `loadtest.report`)."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    with contextlib.ExitStack() as stack:
        workdir = config.keep_logs or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="arbees-load-")))
        workdir.mkdir(parents=True, exist_ok=True)
        runtime = Runtime(workdir, markets=config.markets, rate=config.rate, workers=config.workers,
                          seed=config.seed)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            try:
                results, stream_ns, polling_ns = await _phases(config, runtime, stop, progress)
            finally:
                await runtime.stop()
    print_results(results, console)
    if config.json_path is not None:
        write_json(results, config.json_path)
    if config.png_path is not None:
        try:
            plot_cdf(stream_ns, polling_ns, config.png_path, f"Book change to consumer, {config.markets} markets "
                                                              f"per venue × {config.rate:g} updates/s")
        except ImportError:
            console.print("no PNG: matplotlib is missing (pip install -e '.[plot]')")
    return results


async def _phases(config: LoadConfig, runtime: Runtime, stop: asyncio.Event,
                  progress: Progress) -> tuple[dict[str, Any], list[int], list[int]]:
    load_before = os.getloadavg()
    task = progress.add_task("starting the simulators", total=None, detail="")
    await runtime.start_simulators()
    progress.update(task, description="starting broker, workers, shard")
    await runtime.start_roles()
    progress.update(task, description="waiting for every market at the shard")
    streaming = await runtime.wait_streaming(
        stop, lambda held, expected: progress.update(task, total=expected, completed=held,
                                                     detail=f"{held}/{expected} markets"))
    if streaming:
        await _countdown(progress, task, "warm-up", config.warmup, stop)
    first_status = await runtime.status() if streaming else None
    first = {name: procstats.sample(pid) for name, pid in runtime.processes}
    start_ns, started = time.time_ns(), time.monotonic()
    if streaming:
        await _countdown(progress, task, "streaming, measured", config.duration, stop)
    window = time.monotonic() - started
    last_status = await runtime.status() if streaming else None
    last = {name: procstats.sample(pid) for name, pid in runtime.processes}
    end_ns = time.time_ns()
    progress.update(task, description="stopping the runtime", total=None, detail="")
    await runtime.stop_roles()
    latencies = join_logs(runtime.send_log, runtime.frame_logs, runtime.latency_log, start_ns, end_ns)
    polling = PollingResult()
    poll_duration = config.duration if config.poll_duration is None else config.poll_duration
    if streaming and poll_duration > 0 and not stop.is_set():
        progress.update(task, description="REST polling the same markets", total=poll_duration, completed=0)
        polling = await measure_polling(*_endpoints(runtime.venue_env), sim_games(config.markets, config.seed),
                                        config.interval, poll_duration, stop,
                                        lambda elapsed: progress.update(task, completed=elapsed,
                                                                        detail=f"{elapsed:.0f}/{poll_duration:g} s"))
    stream = _stream_section(latencies, first_status, last_status, window, first, last)
    results = {"markets": config.markets, "rate_per_market": config.rate, "duration_s": round(window, 1),
               "workers": config.workers, "stream": stream, "polling": _polling_section(polling, config.interval),
               "ratio_p50": _ratio(polling.latencies_ns, latencies.end_to_end),
               "interrupted": stop.is_set(), "restarts": runtime.restarts,
               "load_average": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in os.getloadavg()]}}
    return results, latencies.end_to_end, polling.latencies_ns


async def _countdown(progress: Progress, task: TaskID, what: str, seconds: float, stop: asyncio.Event) -> None:
    progress.update(task, description=what, total=seconds, completed=0)
    started = time.monotonic()
    while not stop.is_set() and (elapsed := time.monotonic() - started) < seconds:
        progress.update(task, completed=elapsed, detail=f"{elapsed:.0f}/{seconds:g} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(0.25, seconds - elapsed))


def _endpoints(env: dict[str, str]) -> tuple[KalshiEndpoint, PolymarketEndpoint]:
    """The simulators' endpoints from the variables their banner exports."""
    credentials = KalshiCredentials.from_files(env["KALSHI_API_KEY_ID"], env["KALSHI_PRIVATE_KEY_PATH"])
    return (KalshiEndpoint(env["KALSHI_REST_URL"], env["KALSHI_WS_URL"], credentials),
            PolymarketEndpoint(env["POLYMARKET_CLOB_URL"], env["POLYMARKET_GAMMA_URL"], env["POLYMARKET_WS_URL"]))


def _stream_section(latencies: StreamLatencies, first_status: dict[str, Any] | None,
                    last_status: dict[str, Any] | None, window: float,
                    first: dict[str, procstats.ProcSample | None],
                    last: dict[str, procstats.ProcSample | None]) -> dict[str, Any]:
    before = runtime_counters(first_status or {})
    after = runtime_counters(last_status or {})
    delta = {k: after[k] - before[k] for k in after} if first_status and last_status else dict.fromkeys(after)
    per_min = 60 / window if window > 0 else 0
    return {
        "latency_us": summary_us(latencies.end_to_end),
        "hops_us": {"venue_to_worker": summary_us(latencies.venue_to_worker),
                    "worker_to_shard": summary_us(latencies.worker_to_shard)},
        "records": latencies.records,
        "unmatched": latencies.unmatched,
        "throughput_per_s": round(latencies.records / window, 1) if window > 0 else None,
        "rest_calls_per_min": None if delta["rest_requests"] is None else round(delta["rest_requests"] * per_min, 2),
        "reconnects": delta["reconnects"], "resyncs": delta["resyncs"], "bus_gaps": delta["bus_gaps"],
        "venue_gaps": delta["venue_gaps"], "pub_dropped": delta["pub_dropped"],
        "processes": [procstats.usage(name, first.get(name), last.get(name)) for name in last],
    }


def _polling_section(polling: PollingResult, interval: float) -> dict[str, Any]:
    return {"latency_us": summary_us(polling.latencies_ns, ("p50", "p90", "p99")),
            "rest_calls_per_min": round(polling.rest_calls * 60 / polling.elapsed_s, 1) if polling.elapsed_s else None,
            "interval_s": interval, "changes_made": polling.changes_made, "unexplained": polling.unexplained}


def _ratio(slow_ns: list[int], fast_ns: list[int]) -> float | None:
    if not slow_ns or not fast_ns:
        return None
    slow, fast = summary_us(slow_ns)["p50"], summary_us(fast_ns)["p50"]
    return round(slow / fast, 1) if slow and fast else None  # type: ignore[operator]
