"""Circuit breakers and retry backoff for outside dependencies (broker, camera, registrar,
serial port, NetBox).

Written by hand on purpose: pybreaker reads the wall clock internally, which jumps on a Pi
at NTP sync, and we need an injected monotonic clock to test open/half-open timing without
sleeping. For bounded retries inside a single call, tenacity is the tool to add when a
worker first needs one.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

from edge.clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class BreakerOpen(Exception):
    """Raised instead of calling a dependency whose breaker is open."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
    Jitter"): many nodes losing one broker at once must not reconnect in lockstep."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5  # fraction of the delay that is randomised

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (0-based)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt))
        r = (rng or random).random()
        return base * (1.0 - self.jitter) + base * self.jitter * r


class CircuitBreaker:
    """Closed → open after `failure_threshold` consecutive failures; open → half-open after
    `reset_timeout` (monotonic seconds, growing with backoff while the dependency stays down);
    in half-open exactly one trial call is let through, and its outcome closes or re-opens it.

    Reading `state` never changes it: the open → half-open transition happens in `allow()`,
    when a caller actually takes the trial, so a metrics scrape or a health poll cannot move
    the breaker (or its health component) by looking at it. A trial whose caller never
    reports back (it crashed between `allow()` and `record_*`) is given up after another
    reset timeout, and the next caller gets the trial instead of the breaker staying shut.
    """

    def __init__(self, name: str, failure_threshold: int = 3, reset_timeout: float = 5.0,
                 max_reset_timeout: float = 300.0, clock: Clock = SYSTEM_CLOCK,
                 on_change: Callable[["CircuitBreaker"], None] | None = None):
        self.name = name
        self.failure_threshold = failure_threshold
        self._backoff = Backoff(initial=reset_timeout, maximum=max_reset_timeout, jitter=0.0)
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.RLock()  # on_change callbacks may read the state again
        self._state = CLOSED
        self._failures = 0
        self._opens_in_a_row = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None  # when the half-open trial was handed out
        self.last_error: str | None = None
        self.since = clock.monotonic()
        self.open_count = 0

    @property
    def state(self) -> str:
        """The current state, without side effects."""
        with self._lock:
            return self._state

    def _reset_after(self) -> float:
        return self._backoff.delay(self._opens_in_a_row - 1)

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when it would now)."""
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(0.0, self._opened_at + self._reset_after() - self._clock.monotonic())

    def allow(self) -> bool:
        """True when a call may be tried now: always while closed; in half-open only for the
        one caller that takes the trial (it must then call `record_success` or
        `record_failure`)."""
        with self._lock:
            now = self._clock.monotonic()
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if now - self._opened_at < self._reset_after():
                    return False
                self._trial_started = now
                self._set(HALF_OPEN)
                return True
            # HALF_OPEN: the trial is out; admit another only when it was abandoned
            if self._trial_started is not None and now - self._trial_started < self._reset_after():
                return False
            self._trial_started = now
            return True

    def call(self, fn: Callable[[], T]) -> T:
        if not self.allow():
            raise BreakerOpen(f"{self.name} is unavailable ({self.last_error}); retrying later")
        try:
            result = fn()
        except Exception as exc:
            self.record_failure(exc)
            raise
        self.record_success()
        return result

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opens_in_a_row = 0
            self._trial_started = None
            if self._state != CLOSED:
                self._set(CLOSED)

    def record_failure(self, error: BaseException | str) -> None:
        with self._lock:
            self.last_error = str(error) or type(error).__name__
            self._failures += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self.failure_threshold):
                self._opens_in_a_row += 1
                self._opened_at = self._clock.monotonic()
                self._trial_started = None
                self.open_count += 1
                self._set(OPEN)

    def _set(self, state: str) -> None:
        self._state = state
        self.since = self._clock.monotonic()
        if self._on_change:
            self._on_change(self)

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self._state, "last_error": self.last_error, "open_count": self.open_count,
                    "retry_in_s": round(self.retry_in(), 1)}


class BreakerBoard:
    """All breakers of the process, so health and metrics can show every one of them."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, on_change: Callable[[CircuitBreaker], None] | None = None):
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str, **kwargs) -> CircuitBreaker:
        with self._lock:
            if name not in self._breakers:
                self._breakers[name] = CircuitBreaker(name, clock=self._clock, on_change=self._on_change, **kwargs)
            return self._breakers[name]

    def all(self) -> dict[str, CircuitBreaker]:
        with self._lock:
            return dict(self._breakers)
