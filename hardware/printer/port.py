"""A printer's serial port, opened by pyserial URL: a device path (`/dev/serial/by-id/...`
is the one to configure: it survives replugs and other USB devices), `socket://host:port`
(a serial server) or `loop://` (tests).

Responsible for: opening, reading whole lines (a line split across reads is kept until its
end arrives), writing, and turning every way a port can vanish (an unplugged USB adapter
reads as "returned no data", EIO, ENODEV, a closed socket) into `PortGone`, so the owner
sees one kind of failure. Not responsible for: the protocol (services/printer/marlin.py),
reopening (edge/reopen.py behind the printer's breaker).
"""

from __future__ import annotations

import threading

import serial

# Reads return after this long without data, so the sender can send and check timeouts.
READ_TIMEOUT_S = 0.02
WRITE_TIMEOUT_S = 5.0
MAX_PARTIAL_BYTES = 4096  # far beyond any Marlin reply; more without a newline is not a reply


class PortGone(OSError):
    """The port cannot be opened, or vanished while in use (unplugged, closed, reset)."""


class SerialPort:
    def __init__(self, url: str, baud: int = 115200, read_timeout: float = READ_TIMEOUT_S):
        self.url = url
        self.baud = baud
        self.read_timeout = read_timeout
        self._serial: serial.SerialBase | None = None
        self._partial = b""
        self._write_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        self._partial = b""
        options = {"baudrate": self.baud, "timeout": self.read_timeout, "write_timeout": WRITE_TIMEOUT_S}
        if "://" not in self.url:
            options["exclusive"] = True  # a second program on the same printer garbles both
        try:
            self._serial = serial.serial_for_url(self.url, **options)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortGone(f"cannot open {self.url}: {exc}; check the printer's cable and power, and [printer] "
                           f"port (ls /dev/serial/by-id/)") from None

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass  # closing a port that vanished: nothing left to release

    def read_lines(self) -> list[str]:
        """The complete lines that arrive within the read timeout (none when it passes)."""
        port = self._serial
        if port is None:
            raise PortGone(f"{self.url} is closed")
        try:
            data = port.read(port.in_waiting or 1)
            while data and port.in_waiting and len(data) < 65536:  # socket:// says 1 while anything waits
                data += port.read(port.in_waiting)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's posix read after close() from another thread.
            raise PortGone(f"{self.url} vanished: {exc}") from None
        if not data:
            return []
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_PARTIAL_BYTES:  # a device that never ends a line (wrong baud, noise)
            lines.append(self._partial)  # handed on as garbage, not kept and copied forever
            self._partial = b""
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]

    def write_first(self, data: bytes) -> None:
        """Write `data` ahead of whatever still waits to leave (the emergency stop): the output
        not yet on the wire is discarded first (tcflush TCOFLUSH; USB adapters purge their
        FIFO), so `data` does not queue behind lines that must not run anyway."""
        port = self._serial
        if port is None:
            raise PortGone(f"{self.url} is closed")
        try:
            with self._write_lock:
                port.reset_output_buffer()
                port.write(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise PortGone(f"writing to {self.url} failed: {exc}") from None

    def write(self, data: bytes) -> None:
        port = self._serial
        if port is None:
            raise PortGone(f"{self.url} is closed")
        try:
            with self._write_lock:  # the emergency stop writes from another thread
                port.write(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise PortGone(f"writing to {self.url} failed: {exc}") from None
