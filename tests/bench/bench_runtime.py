"""Benchmark of `edge run --sim` (prints JSON): time from start to READY=1, RSS after 30 s,
CPU seconds over 60 s idle, and bytes written over an idle window (from /proc/<pid>/io
`wchar`, plus SQLite's own commit counter from /metrics, since `write_bytes` lags behind
writeback). For comparison in the same run it measures a bare `python -c` interpreter start
to exit, so the start-up time reads as a ratio to Python's own start.

    python tests/bench/bench_runtime.py [--idle-s 120]
"""

from __future__ import annotations

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
from measures import bench_parser

EDGE = str(Path(sys.executable).with_name("edge"))


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (the recognition child and whatever it starts)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return [pid] + [p for child in children for p in tree(child)]


def proc_stat(pid: int) -> dict:
    """CPU seconds, RSS and written bytes summed over the process tree."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = {"cpu_s": 0.0, "rss_mb": 0.0, "wchar": 0, "write_bytes": 0, "processes": 0}
    for p in tree(pid):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            rss_kb = next(int(line.split()[1]) for line in open(f"/proc/{p}/status") if line.startswith("VmRSS:"))
            io = dict(line.strip().split(": ") for line in open(f"/proc/{p}/io"))
        except (OSError, StopIteration):
            continue  # ended meanwhile
        total["cpu_s"] += (int(fields[11]) + int(fields[12])) / ticks
        total["rss_mb"] += rss_kb / 1024
        total["wchar"] += int(io["wchar"])
        total["write_bytes"] += int(io["write_bytes"])
        total["processes"] += 1
    return total


def store_counters(base: str, state: Path) -> dict:
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    values = {line.split()[0]: float(line.split()[-1]) for line in text.splitlines() if line.startswith("edge_store_")}
    files = sum(f.stat().st_size for f in state.glob("edge.sqlite3*"))
    return {"commits": values["edge_store_commits_total"], "changed_rows": values["edge_store_changed_rows_total"],
            "file_bytes": files}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--idle-s", type=float, default=120.0, help="idle window for written bytes (at least 120)")
    args = parser.parse_args()
    if args.idle_s < 120:
        parser.error("--idle-s must be at least 120: write-back and periodic work need that long to show")
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
            store0 = store_counters(base, tmp / "state")
            time.sleep(60)
            at90 = proc_stat(proc.pid)
            time.sleep(max(0.0, args.idle_s - 60))
            end = proc_stat(proc.pid)
            store1 = store_counters(base, tmp / "state")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            listener.close()
    print(json.dumps({
        "ready_s": round(ready_s, 3),
        "python_start_s": round(python_start_s, 3),
        "ready_vs_python_start_ratio": round(ready_s / python_start_s, 1),
        "processes": at30["processes"],
        "rss_mb_after_30s": round(at30["rss_mb"], 1),
        "cpu_s_over_60s_idle": round(at90["cpu_s"] - at30["cpu_s"], 3),
        "cpu_fraction_idle": round((at90["cpu_s"] - at30["cpu_s"]) / 60, 4),
        "idle_window_s": args.idle_s,
        "wchar_bytes_idle": end["wchar"] - at30["wchar"],
        "write_bytes_idle": end["write_bytes"] - at30["write_bytes"],
        "sqlite_commits_idle": store1["commits"] - store0["commits"],
        "sqlite_changed_rows_idle": store1["changed_rows"] - store0["changed_rows"],
        "sqlite_file_growth_bytes_idle": store1["file_bytes"] - store0["file_bytes"],
    }, indent=1))


if __name__ == "__main__":
    main()
