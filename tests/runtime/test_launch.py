"""`arbees launch` as a user runs it: into a pipe, then Ctrl-C; and the one-line errors of the role commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import ctrl_c_after, wait_for

ARBEES = [sys.executable, "-m", "broker"]


def children_of(pid: int) -> set[int]:
    """Direct children of `pid`, from /proc (the launcher's role processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_launch_streams_restarts_a_dead_child_and_leaves_nothing_on_ctrl_c(tmp_path: Path) -> None:
    base = tmp_path / "base"
    env = {**os.environ, "ARBEES_RUNTIME_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    out, err = (tmp_path / "out.txt").open("wb"), (tmp_path / "err.txt").open("wb")
    launch = subprocess.Popen([*ARBEES, "launch", "--status-every", "0.5"], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=err, env=env, start_new_session=True)
    out.close()
    err.close()
    with ctrl_c_after(launch):
        wait_for(lambda: "40/40 markets live" in (tmp_path / "out.txt").read_text(), 60,
                 "the launch to show all 40 markets live")
        current = json.loads((base / "current.json").read_text())
        assert current["pid"] == launch.pid
        status = subprocess.run([*ARBEES, "status", "--json"], env=env, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert len(document["assignment"]) == 40 and set(document["workers"]) == {"w0", "w1"}
        tail = subprocess.run([*ARBEES, "tail", "--json", "--count", "3", "--no-signals", "kalshi/*"], env=env,
                              capture_output=True, text=True, timeout=30)
        assert tail.returncode == 0, tail.stderr
        lines = [json.loads(line) for line in tail.stdout.splitlines()]
        assert len(lines) == 3 and all(line["platform"] == "kalshi" for line in lines)

        children = children_of(launch.pid)
        assert len(children) == 6, "sim, broker, 2 workers, 2 shards"
        worker_pid = document["workers"]["w0"]["pid"]
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: "1 restarts" in (tmp_path / "out.txt").read_text(), 30, "the launcher to restart w0")
        wait_for(lambda: len(children_of(launch.pid)) == 6, 30, "the restarted worker to run")
        children |= children_of(launch.pid)
    assert launch.returncode == 0, (tmp_path / "err.txt").read_text()[-3000:]
    assert not [pid for pid in children if alive(pid)], "role processes outlived the launcher"
    leftovers = [p for p in base.rglob("*")]
    assert not leftovers, f"left behind: {leftovers}"


@pytest.mark.parametrize(("args", "expected"), [
    (["broker", "--config", "/nonexistent/games.toml"], "does not exist"),
    (["status", "--broker", "ipc:///nonexistent/broker", "--timeout", "0.5"], "no answer from the broker"),
    (["tail", "--broker", "ipc:///nonexistent/broker", "--timeout", "0.5"], "no answer from the broker"),
    (["broker", "--endpoint", "tcp://0.0.0.0:0"], "beyond loopback"),
    (["worker", "--broker", "ipc:///nonexistent/broker"], "no venue configured"),
])
def test_role_commands_fail_with_one_clear_line(tmp_path: Path, args: list[str], expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALSHI_", "POLYMARKET_", "ARBEES_"))}
    env["ARBEES_RUNTIME_DIR"] = str(tmp_path)
    result = subprocess.run([*ARBEES, *args], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_config_file_names_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "games.toml"
    config.write_text('[[game]]\nid = "g1"\n[game.kalshi]\nmarket = "KX-1"\n')
    result = subprocess.run([*ARBEES, "broker", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "game 'g1', kalshi: 'yes' must name the outcome" in result.stderr


def test_an_endpoint_in_use_is_refused(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/broker"
    first = subprocess.Popen([*ARBEES, "broker", "--endpoint", endpoint], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert first.stdout is not None
        assert "listening on" in first.stdout.readline().decode()
        second = subprocess.run([*ARBEES, "broker", "--endpoint", endpoint], capture_output=True, text=True,
                                timeout=30)
        assert second.returncode != 0 and "is in use" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=10)
    assert not (tmp_path / "broker").exists()
