"""Runs workers in threads and keeps them running (one_for_one, in the Erlang/OTP sense).

Responsible for: ordered start and reverse-ordered cooperative stop; restart policies
(permanent / transient / temporary); exponential backoff with jitter between restarts;
restart intensity (more than `max_restarts` restarts within `within_s` seconds → the worker
is FAILED, and a critical one escalates to a process exit); the heartbeat watchdog that
marks a silent worker HUNG and asks it to interrupt itself. Not responsible for systemd:
the runtime's main loop asks `all_critical_fresh()` before it pets the systemd watchdog.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from edge.breaker import Backoff
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Key, Section
from edge.health import DEGRADED, FAILED, HUNG, OK, STARTING, STOPPED, HealthRegistry
from edge.jsonlog import current_worker
from edge.worker import TEMPORARY, TRANSIENT, Worker, WorkerContext

log = logging.getLogger("edge.supervisor")

SECTION = Section("supervisor", (
    Key("max_restarts", int, 5, "restarts allowed within within_s before a worker is FAILED", min=0),
    Key("within_s", float, 60.0, "the restart-intensity window", min=1),
    Key("backoff_initial_s", float, 1.0, "first restart delay", min=0),
    Key("backoff_max_s", float, 30.0, "longest restart delay", min=0),
    Key("stop_timeout_s", float, 5.0, "how long each worker gets to stop on SIGTERM", min=0.1),
), "restart policy and stop timeouts for every worker")


@dataclass(frozen=True)
class Policy:
    max_restarts: int = 5
    within_s: float = 60.0
    backoff: Backoff = Backoff(initial=1.0, maximum=30.0, jitter=0.5)
    stop_timeout_s: float = 5.0

    @classmethod
    def from_config(cls, cfg) -> "Policy":
        return cls(cfg.max_restarts, cfg.within_s, Backoff(initial=cfg.backoff_initial_s,
                                                            maximum=cfg.backoff_max_s), cfg.stop_timeout_s)


class WorkerRunner:
    """One worker's thread and bookkeeping across its restarts."""

    def __init__(self, factory: Callable[[], Worker], supervisor: "Supervisor"):
        self._factory = factory
        self._sup = supervisor
        self.worker = factory()
        self.name = self.worker.name
        self.stop_event = threading.Event()
        self.entered = threading.Event()
        self.thread: threading.Thread | None = None
        self.state = STARTING
        self.reason = ""
        self.last_heartbeat = supervisor.clock.monotonic()
        self.hung = False
        self.backing_off = False
        self.restarts = 0
        self.crashes = 0
        self.delays: list[float] = []
        self._restart_times: deque[float] = deque()
        self._rng = random.Random()
        # The runner thread and the supervisor loop both change the state; without this a
        # poll could overwrite FAILED with OK.
        self._lock = threading.RLock()

    @property
    def critical(self) -> bool:
        return self.worker.critical

    def heartbeat(self) -> None:
        self.last_heartbeat = self._sup.clock.monotonic()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"worker-{self.name}", daemon=True)
        self.thread.start()

    def _set(self, state: str, reason: str = "") -> None:
        with self._lock:
            self.state, self.reason = state, reason
            self._sup.health.set(f"worker.{self.name}", state, reason, critical=self.critical)

    def _loop(self) -> None:
        current_worker.set(self.name)
        clock, policy = self._sup.clock, self._sup.policy
        attempt = 0
        while not self.stop_event.is_set():
            started = clock.monotonic()
            self.heartbeat()
            self.hung = False
            self._set(OK, "running")
            self.entered.set()
            crash: BaseException | None = None
            try:
                self.worker.run(self._sup.make_context(self.worker, self.stop_event, self.heartbeat))
            except BaseException as exc:  # a worker's SystemExit or KeyboardInterrupt is a crash too
                crash = exc
            if self.stop_event.is_set():
                break
            if crash is None and self.worker.restart in (TRANSIENT, TEMPORARY):
                self._set(STOPPED, "finished")
                return
            if crash is not None:
                self.crashes += 1
                log.error("worker %s crashed: %r", self.name, crash, exc_info=crash, extra={"worker": self.name})
                if self.worker.restart == TEMPORARY:
                    self._set(FAILED, f"crashed ({crash!r}); temporary workers are not restarted")
                    return
            now = clock.monotonic()
            if now - started > policy.within_s:
                attempt = 0  # it ran well for a whole window: start the backoff afresh
            self._restart_times.append(now)
            while self._restart_times and now - self._restart_times[0] > policy.within_s:
                self._restart_times.popleft()
            why = f"crashed: {crash!r}" if crash is not None else "returned"
            if len(self._restart_times) > policy.max_restarts:
                self._set(FAILED, f"{why}; {len(self._restart_times)} restarts within "
                                  f"{policy.within_s:g}s, giving up")
                log.error("worker %s FAILED after %d restarts in %gs", self.name, len(self._restart_times),
                          policy.within_s, extra={"worker": self.name})
                if self.critical:
                    self._sup.escalate(self.name)
                return
            delay = policy.backoff.delay(attempt, self._rng)
            attempt += 1
            self.delays.append(delay)
            self._set(DEGRADED, f"{why}; restarting in {delay:.1f}s")
            self.backing_off = True
            stop = self.stop_event.wait(delay)
            self.backing_off = False
            if stop:
                break
            self.restarts += 1
            self.worker = self._factory()
        self._set(STOPPED, "stopped")

    def check(self, now: float) -> None:
        """Watchdog and health poll, called from the supervisor loop."""
        with self._lock:
            self._check(now)

    def _check(self, now: float) -> None:
        if self.backing_off or self.state not in (OK, DEGRADED, HUNG) or not self.entered.is_set():
            return
        age = now - self.last_heartbeat
        if age > self.worker.heartbeat_timeout_s:
            if not self.hung:
                self.hung = True
                self._set(HUNG, f"no heartbeat for {age:.1f}s (timeout {self.worker.heartbeat_timeout_s:g}s)")
                log.error("worker %s is hung; interrupting it", self.name, extra={"worker": self.name})
                self._interrupt()
            return
        if self.hung:
            self.hung = False
            log.warning("worker %s recovered from a hang", self.name, extra={"worker": self.name})
        reported = self.worker.health()
        self._set(*(reported or (OK, "running")))

    def _interrupt(self) -> None:
        try:
            self.worker.interrupt()
        except Exception:  # an interrupt hook must not take the supervisor down with it
            log.exception("interrupt hook of %s failed", self.name, extra={"worker": self.name})

    def fresh(self) -> bool:
        return not self.hung and self.state not in (FAILED, HUNG)


class Supervisor:
    def __init__(self, factories: list[Callable[[], Worker]],
                 make_context: Callable[[Worker, threading.Event, Callable[[], None]], WorkerContext],
                 health: HealthRegistry, clock: Clock = SYSTEM_CLOCK, policy: Policy = Policy(),
                 on_escalate: Callable[[str], None] | None = None):
        self.clock = clock
        self.policy = policy
        self.health = health
        self.make_context = make_context
        self._on_escalate = on_escalate
        self.runners = [WorkerRunner(f, self) for f in factories]
        self.runners.sort(key=lambda r: r.worker.start_order)
        self.escalated: str | None = None

    def start(self, first_heartbeat_s: float = 2.0) -> None:
        """Start in order; wait until each worker has entered `run` before the next, so the
        button path is up before anything that needs the network."""
        for runner in self.runners:
            runner.start()
            runner.entered.wait(first_heartbeat_s)

    def runner(self, name: str) -> WorkerRunner:
        return next(r for r in self.runners if r.name == name)

    def restart(self, name: str) -> None:
        """Ask a worker to restart (e.g. from a Home Assistant button): interrupt it; the
        runner's restart policy then brings it back as after a crash."""
        self.runner(name)._interrupt()

    def escalate(self, name: str) -> None:
        self.escalated = name
        if self._on_escalate:
            self._on_escalate(name)

    def tick(self) -> None:
        now = self.clock.monotonic()
        for runner in self.runners:
            runner.check(now)

    def all_critical_fresh(self) -> bool:
        return all(r.fresh() for r in self.runners if r.critical)

    def critical_running(self) -> bool:
        return all(r.state in (OK, DEGRADED) and r.entered.is_set() for r in self.runners if r.critical)

    def stop(self) -> list[str]:
        """Stop in reverse start order; each worker gets `stop_timeout_s`, then its interrupt
        hook, then half that again. Returns the names that did not stop."""
        stuck = []
        for runner in reversed(self.runners):
            runner.stop_event.set()
            if runner.thread is None:
                continue
            runner.thread.join(self.policy.stop_timeout_s)
            if runner.thread.is_alive():
                runner._interrupt()
                runner.thread.join(self.policy.stop_timeout_s / 2)
            if runner.thread.is_alive():
                stuck.append(runner.name)
                log.error("worker %s did not stop within %.1fs", runner.name, self.policy.stop_timeout_s * 1.5)
        return stuck
