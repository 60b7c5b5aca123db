"""A real unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from edge.testing.waiting import scaled


class NotifyListener:
    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []  # (monotonic arrival, datagram)

    def drain(self, timeout: float = 0.0) -> None:
        self.sock.settimeout(timeout if timeout > 0 else 0.0001)
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, TimeoutError, socket.timeout):
                return
            self.messages.append((time.monotonic(), data.decode()))
            self.sock.settimeout(0.0001)

    def wait_for(self, prefix: str, timeout: float = 10.0, after: float = 0.0) -> str:
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            for t, m in self.messages:
                if t >= after and any(line.startswith(prefix) for line in m.splitlines()):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} within {timeout}s; got {[m for _, m in self.messages]}")
            self.drain(min(left, 0.1))

    def count(self, prefix: str, after: float = 0.0) -> int:
        return sum(1 for t, m in self.messages if t >= after and m.startswith(prefix))

    def close(self) -> None:
        self.sock.close()
