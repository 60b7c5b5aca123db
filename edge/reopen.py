"""Reopening a device that comes and goes (a camera, a printer's serial port) behind its
circuit breaker.

Expected absence is not a crash: an unplugged camera or printer is a closed device with a
reason, an open breaker and a DEGRADED health line, and it is opened again by probes when
the breaker lets a trial through. `ReopeningDevice` keeps that state for one device with
`open()` and `close()`:

- `probe()` opens the device if it is not open and the breaker allows a trial, optionally
  checks the reopened device (`verify`, after `failed(..., verify_on_reopen=True)`: the
  doorbell wants two good frames from a camera that served black ones), and records the
  outcome with the breaker. `probe_when_due()` does the same at most once per
  `probe_interval` seconds on the injected clock (between rings, the loop probes often).
- `failed(exc)`, when using the device went wrong: closed, breaker failure recorded, the
  device released (a release that raises is logged, not raised).
- `is_open` and `error` (why it is not open) for health; "unavailable" and "is back" are
  logged once per transition, not on every failed probe.

Errors of the `expected` types are the device saying it is gone (CameraError, OSError);
anything else a driver raises (cv2.error, a libcamera RuntimeError) counts as the device
failing too, but is logged with its traceback because nobody expected it.

Not responsible for: using the device (the caller captures or writes and reports back with
`record_success()` / `failed()`), the breaker's timing (edge/breaker.py), containing the
caller's other errors (edge/containment.py). `probe` and `failed` are for the owner's
thread; `is_open`, `error` and `snapshot()` may be read from any thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

from edge.breaker import CircuitBreaker
from edge.clock import SYSTEM_CLOCK, Clock


class Device(Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...


class ReopeningDevice:
    """One device behind its breaker, reopened by probes. `name` (default: the breaker's)
    starts the log lines; `consequence` says what goes on without the device ("rings go on
    without pictures")."""

    def __init__(self, device: Device, breaker: CircuitBreaker, log: logging.Logger, *,
                 name: str | None = None, expected: tuple[type[BaseException], ...] = (OSError,),
                 verify: Callable[[], None] | None = None, probe_interval: float = 1.0,
                 clock: Clock = SYSTEM_CLOCK, consequence: str = "retrying when its breaker allows"):
        self.device = device
        self.breaker = breaker
        self.name = name or breaker.name
        self.expected = expected
        self.verify = verify
        self.probe_interval = probe_interval
        self.consequence = consequence
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._error: str | None = None
        self._verify_on_reopen = False
        self._next_probe_at: float | None = None  # None: probe_when_due() may probe at once

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def error(self) -> str | None:
        """Why the device is not open (None while open, or before the first probe)."""
        return self._error

    def snapshot(self) -> dict:
        with self._lock:
            return {"open": self._open, "error": self._error}

    def probe(self) -> bool:
        """True when the device is open, opening it first if the breaker allows a trial."""
        if self._open:
            return True
        if not self.breaker.allow():
            with self._lock:
                self._error = self.breaker.last_error or self._error or f"{self.name} breaker is open"
            return False
        try:
            self.device.open()
            if self._verify_on_reopen and self.verify is not None:
                self.verify()
        except Exception as exc:  # any driver error means "not usable"; failed() logs it
            self.failed(exc)  # a failed verification stays due for the next reopen
            return False
        self.breaker.record_success()
        with self._lock:
            was_failing = self._error is not None
            self._open, self._error, self._verify_on_reopen = True, None, False
        if was_failing:
            self._log.info("%s is back", self.name)
        return True

    def probe_when_due(self) -> bool:
        """`probe()`, but a closed device is tried at most once per `probe_interval`."""
        if self._open:
            return True
        now = self._clock.monotonic()
        if self._next_probe_at is not None and now < self._next_probe_at:
            return False
        self._next_probe_at = now + self.probe_interval
        return self.probe()

    def record_success(self) -> None:
        """Using the open device worked (a burst, a reply): the breaker hears it."""
        self.breaker.record_success()

    def failed(self, exc: BaseException, *, verify_on_reopen: bool = False) -> None:
        """Using or opening the device failed: mark it closed, record the failure with the
        breaker and release the device. With `verify_on_reopen`, the next probe runs
        `verify` after opening (the device opened fine but delivered garbage)."""
        if isinstance(exc, self.expected):
            reason = str(exc) or type(exc).__name__
        else:  # a driver's own error type: still the device failing, but keep its traceback
            reason = f"{type(exc).__name__}: {exc}"
            self._log.error("%s failed: %s", self.name, reason, exc_info=exc)
        with self._lock:
            transition = self._open or self._error is None
            self._open, self._error = False, reason
            self._verify_on_reopen = self._verify_on_reopen or verify_on_reopen
        if transition:
            self._log.warning("%s unavailable: %s; %s", self.name, reason, self.consequence)
        self.breaker.record_failure(reason)
        self._release("closing the failed %s failed too")

    def close(self) -> None:
        """Release the device for good (shutdown): not a failure, the breaker is untouched."""
        with self._lock:
            self._open = False
        self._release("closing %s failed")

    def _release(self, message: str) -> None:
        try:
            self.device.close()
        except Exception:  # releasing a broken device can fail too; the next open() starts afresh
            self._log.exception(message, self.name)
