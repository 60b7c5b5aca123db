"""Containment: no single step of a worker's loop can take the worker down.

A worker's loop is made of steps (take a burst, save a snapshot, poll the temperatures,
publish states). Letting one step's exception end run() would close what the worker
holds (the doorbell's GPIO: button and chime dead until the supervisor restarts it).
`StepGuard.run` runs one named step instead: whatever it raises is logged with its
traceback once per distinct reason (not on every loop, to spare the log and the SD card),
remembered as a fault of that step until the step works again (then one "works again"
line), and turned into a default value. health() reports the current faults.

Only `Exception` is contained: KeyboardInterrupt and SystemExit still end the process.

Not responsible for: retrying (the next loop runs the step again), breakers around outside
dependencies (edge/breaker.py, edge/reopen.py), restarting workers (edge/supervisor.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable


class StepGuard:
    """Runs a worker's steps so that none can raise, and remembers which ones are failing.

    `owner` and `consequence` make the log lines: "doorbell step 'snapshot' failed
    (PermissionError: ...); the bell rings on". `run`, `report` and `clear` are meant for the
    worker's own thread; `faults()` and `problems()` may be read from any thread (health)."""

    def __init__(self, log: logging.Logger, owner: str = "worker", consequence: str = "it carries on"):
        self._log = log
        self.owner = owner
        self.consequence = consequence
        self._faults: dict[str, str] = {}  # step → why it last failed
        self._lock = threading.Lock()

    def run(self, step: str, action: Callable[..., Any], *args: Any, default: Any = None,
            failed: dict[str, str] | None = None) -> Any:
        """`action(*args)`, or `default` when it raises. The exception is logged with its
        traceback when its reason differs from the step's current fault, remembered until
        the step works again, and added to `failed` (the caller's record of one pass, e.g.
        one ring) as step → reason."""
        try:
            value = action(*args)
        except Exception as exc:  # contained: logged with the traceback, reported by faults()
            reason = f"{type(exc).__name__}: {exc}"
            if self._remember(step, reason):
                self._log.exception("%s step %r failed (%s); %s", self.owner, step, reason, self.consequence)
            if failed is not None:
                failed[step] = reason
            return default
        self.clear(step)
        return value

    def report(self, step: str, reason: str, advice: str | None = None) -> None:
        """Record a fault the caller found without an exception reaching here (it caught
        one itself, or a check failed). Logged as an error once per distinct reason, with
        `advice` (what a person should do) instead of the usual consequence."""
        if self._remember(step, reason):
            self._log.error("%s step %r failed (%s); %s", self.owner, step, reason, advice or self.consequence)

    def clear(self, step: str, message: str | None = None) -> bool:
        """The step worked: forget its fault. Logs `message` (default "<owner> step <step>
        works again") when there was one, and returns whether there was."""
        with self._lock:
            had_fault = self._faults.pop(step, None) is not None
        if had_fault:
            if message is None:
                self._log.info("%s step %r works again", self.owner, step)
            else:
                self._log.info("%s", message)
        return had_fault

    def faults(self) -> dict[str, str]:
        """The steps failing now, step → reason (a copy)."""
        with self._lock:
            return dict(self._faults)

    def problems(self) -> list[str]:
        """The faults as health() words them: "<step> failed (<reason>)"."""
        return [f"{step} failed ({reason})" for step, reason in self.faults().items()]

    def _remember(self, step: str, reason: str) -> bool:
        """Record the fault; True when it is news (the step was fine or failed otherwise)."""
        with self._lock:
            is_news = self._faults.get(step) != reason
            self._faults[step] = reason
        return is_news
