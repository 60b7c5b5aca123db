"""The systemd notify protocol: one datagram per message to the unix socket named in
`NOTIFY_SOCKET` (sd_notify(3)). Small enough to own, and tests point it at a real socket."""

from __future__ import annotations

import os
import socket


SEND_TIMEOUT_S = 1.0


class SystemdNotifier:
    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address or None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None
        if self._sock:
            # The main loop sends these: a reader that stopped reading (its queue holds
            # net.unix.max_dgram_qlen datagrams, 10 by default) costs a message, not the loop.
            self._sock.settimeout(SEND_TIMEOUT_S)
        self.sent: list[str] = []  # for the simulator and debugging: what went out

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        if not self._sock:
            return False
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError:
            return False  # systemd gone (shutdown) or socket full: never crash for this
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ=os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of `WATCHDOG_USEC` (sd_watchdog_enabled(3)),
    or None when systemd asked for none or asked another process (`WATCHDOG_PID`)."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2
