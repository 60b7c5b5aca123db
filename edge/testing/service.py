"""A stand-in for `systemctl start|stop|restart edge.service` in tests that need a real
device process but no systemd: `python -m edge.testing.service --dir DIR start` starts
`$EDGE_PREFIX/current/bin/edge run` in its own session (output appended to DIR/service.log,
its PID in DIR/pid); `stop` sends SIGTERM and, after 20 s (systemd's TimeoutStopSec), SIGKILL.
Give it to the updater as `EDGE_SERVICE_CONTROL="python -m edge.testing.service --dir DIR
{action}"`; the service inherits the caller's environment (EDGE_STATE_DIR, EDGE_CONFIG).

Like systemd's `Restart=` it is not: a release that crashes stays down, which is what the
updater must notice either way.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.releases import prefix_for

STOP_TIMEOUT_S = 20.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except (OSError, IndexError):
        return False


def _pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start(directory: Path) -> int:
    if _pid(directory):
        return 0
    edge = prefix_for() / "current" / "bin" / "edge"
    with open(directory / "service.log", "ab") as log:
        proc = subprocess.Popen([str(edge), "run"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    (directory / "pid").write_text(str(proc.pid))
    return 0


def stop(directory: Path) -> int:
    pid = _pid(directory)
    if pid is None:
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    (directory / "pid").unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.testing.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="where the PID file and the log are kept")
    parser.add_argument("action", choices=("start", "stop", "restart"))
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.action in ("stop", "restart"):
        stop(args.dir)
    if args.action in ("start", "restart"):
        start(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
