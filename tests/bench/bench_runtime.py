"""Benchmark of `edge run --sim` (prints JSON): time from start to READY=1, RSS after 30 s,
CPU seconds over 60 s idle, and bytes written over an idle window (from /proc/<pid>/io
`wchar`, plus SQLite's own commit counter from /metrics, since `write_bytes` lags behind
writeback). For comparison in the same run it measures a bare `python -c` interpreter start
to exit, so the start-up time reads as a ratio to Python's own start.

    python tests/bench/bench_runtime.py [--idle-s 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edge.testing.notify_socket import NotifyListener

EDGE = str(Path(sys.executable).with_name("edge"))


def proc_stat(pid: int) -> dict:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss_kb = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    io = dict(line.strip().split(": ") for line in open(f"/proc/{pid}/io"))
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / ticks, "rss_mb": rss_kb / 1024, "wchar": int(io["wchar"])}


def store_commits(base: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("edge_store_commits_total"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-s", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        listener = NotifyListener(tmp / "notify.sock")
        env = {**os.environ, "EDGE_STATE_DIR": str(tmp / "state"), "EDGE_HEALTH_PORT": "0",
               "NOTIFY_SOCKET": listener.path}
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_start_s = time.monotonic() - t0

        t0 = time.monotonic()
        proc = subprocess.Popen([EDGE, "run", "--sim"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            listener.wait_for("READY=1", timeout=60)
            ready_s = time.monotonic() - t0
            base = (tmp / "state" / "endpoint").read_text().strip()
            time.sleep(max(0.0, 30 - (time.monotonic() - t0)))  # measuring a window, not waiting on a condition
            at30 = proc_stat(proc.pid)
            commits0 = store_commits(base)
            time.sleep(60)
            at90 = proc_stat(proc.pid)
            time.sleep(max(0.0, args.idle_s - 60))
            end = proc_stat(proc.pid)
            commits1 = store_commits(base)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            listener.close()
    print(json.dumps({
        "ready_s": round(ready_s, 3),
        "python_start_s": round(python_start_s, 3),
        "ready_vs_python_start_ratio": round(ready_s / python_start_s, 1),
        "rss_mb_after_30s": round(at30["rss_mb"], 1),
        "cpu_s_over_60s_idle": round(at90["cpu_s"] - at30["cpu_s"], 3),
        "cpu_fraction_idle": round((at90["cpu_s"] - at30["cpu_s"]) / 60, 4),
        "idle_window_s": args.idle_s,
        "wchar_bytes_idle": end["wchar"] - at30["wchar"],
        "sqlite_commits_idle": commits1 - commits0,
    }, indent=1))


if __name__ == "__main__":
    main()
