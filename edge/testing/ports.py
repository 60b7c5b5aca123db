"""Free TCP ports on 127.0.0.1 for servers started by tests, and waiting for such a server
to listen."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, name: str, log_path: Path, timeout: float = 10.0) -> None:
    """Until `proc` accepts TCP connections on 127.0.0.1:`port`. Raises RuntimeError with
    the end of its log when it exits first or does not listen within `timeout` (the caller
    stops it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{name} did not listen on {port} within {timeout}s")
