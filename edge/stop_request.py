"""How the main loop learns that it must stop, from a signal or from any thread, with no lock
taken on the signal's side.

Python runs a signal handler in the main thread between two bytecodes, possibly while the
main thread itself holds a lock: the one inside `threading.Event` (its wait() holds it for a
few bytecodes on every wake-up) or the log rate limiter's. A handler that calls `Event.set()`
or logs then waits forever for its own thread (the signal module's docs warn of it; cpython
#126434 is the same hang with multiprocessing's Event). CI saw it under qemu, where the
signal reaches another thread and the main thread runs the handler just as its timed wait
returns: "received SIGTERM: stopping", then nothing.

So the self-pipe trick, which the standard library's pieces make short enough to own: the
signal's C-level handler writes the signal number into a socket (`signal.set_wakeup_fd`),
another thread writes a zero byte, the main loop waits on the socket with select() and does
the logging itself; the Python-level handler does nothing."""

from __future__ import annotations

import select
import signal
import socket


def _nothing(signum, frame) -> None:
    """The Python-level handler: the byte the C-level handler wrote is the whole message."""


class StopRequest:
    """A flag the main loop sleeps on: `set()` from any thread, or a signal after `install()`."""

    def __init__(self):
        # A socket pair, not os.pipe(): a write after close() raises instead of landing in
        # whatever file took the number.
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._signums: set[int] = set()
        self.requested = False  # one attribute store: atomic, no lock
        self.signals: list[str] = []  # the signals that asked, oldest first, for the loop to log

    def install(self, signums=(signal.SIGTERM, signal.SIGINT)) -> None:
        """Let these signals ask for the stop. Main thread only (as for signal.signal)."""
        for signum in signums:
            signal.signal(signum, _nothing)
            self._signums.add(signum)
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)

    def set(self) -> None:
        self.requested = True
        try:
            self._w.send(b"\0")
        except OSError:  # full (the loop wakes anyway) or closed (nobody waits any more)
            pass

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, less if asked to stop; True once asked."""
        if not self.requested:
            select.select([self._r], [], [], timeout)
            self._take_bytes()
        return self.requested

    def _take_bytes(self) -> None:
        while True:
            try:
                data = self._r.recv(512)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for byte in data:
                if byte in self._signums:  # set() writes 0; another handler's signal is not ours
                    self.signals.append(signal.Signals(byte).name)
                    self.requested = True

    def close(self) -> None:
        if self._signums:
            signal.set_wakeup_fd(-1)
            self._signums.clear()
        self._r.close()
        self._w.close()
