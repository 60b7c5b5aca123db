"""Runs workers in threads and keeps them running (one_for_one, in the Erlang/OTP sense).

Responsible for: ordered start and a cooperative stop (signalled in reverse start order,
within one overall bound); restart policies (permanent / transient / temporary);
exponential backoff with jitter between restarts; restart intensity (more than
`max_restarts` restarts within `within_s` seconds → the worker is FAILED, and a critical one
escalates to a process exit), where a constructor or a `health()` that raises counts as a
crash; the heartbeat watchdog that marks a silent worker HUNG and asks it to interrupt
itself. Not responsible for systemd:
the runtime's main loop asks `all_critical_fresh()` before it pets the systemd watchdog.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
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
    Key("stop_timeout_s", float, 5.0, "how long the workers get to stop on SIGTERM (all at once; then "
        "their interrupt hooks and half that again)", min=0.1),
    Key("requested_restarts", int, 3, "restarts of one worker a command (Home Assistant's button) may ask for "
        "within requested_restarts_window_s; more are refused", min=0),
    Key("requested_restarts_window_s", float, 600.0, "the window of requested_restarts", min=1),
    Key("runtime_restart_min_uptime_s", float, 300.0, "a command may restart the whole runtime only after it "
        "has run this long, so no storm of commands reaches systemd's start limit (10 starts in 600 s)", min=0),
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


def _worker_class(factory: Callable[[], Worker]) -> type[Worker] | None:
    """The class a factory builds, when it can be told without calling it: a
    `functools.partial(cls, config)` (what the runtime passes) or a class."""
    cls = factory.func if isinstance(factory, functools.partial) else factory
    return cls if isinstance(cls, type) and issubclass(cls, Worker) else None


class UnbuiltWorker(Worker):
    """Stands in for a worker whose constructor raised, with the class's name, policy and
    criticality, so a failed construction is handled as a crash of that worker: counted
    against its restart intensity, logged with its traceback, retried after backoff."""

    def __init__(self, factory: Callable[[], Worker], error: BaseException):
        super().__init__(None)
        cls = _worker_class(factory)
        for attr in ("sections", "restart", "critical", "essential", "start_order", "heartbeat_timeout_s",
                     "entities"):
            setattr(self, attr, getattr(cls or Worker, attr))
        self.name = (cls.name if cls is not None else "") or f"unbuilt-{id(factory):x}"
        self.error = error

    def run(self, ctx: WorkerContext) -> None:
        raise self.error


class WorkerRunner:
    """One worker's thread and bookkeeping across its restarts."""

    def __init__(self, factory: Callable[[], Worker], supervisor: "Supervisor"):
        self._factory = factory
        self._sup = supervisor
        self.stop_event = threading.Event()  # the supervisor is stopping this worker for good
        self.entered = threading.Event()
        self.thread: threading.Thread | None = None
        self.state = STARTING
        self.reason = ""
        self.last_heartbeat = supervisor.clock.monotonic()
        self.hung = False
        self.running = False  # inside run() now; the watchdog and health poll look only then
        self.backing_off = False
        self.restarts = 0
        self.crashes = 0
        self.delays: list[float] = []
        self._restart_times: deque[float] = deque()
        self._rng = random.Random()
        # The runner thread and the supervisor loop both change the state; without this a
        # poll could overwrite FAILED with OK.
        self._lock = threading.RLock()
        # `ctx.stopping` of the current run attempt: set at stop, and when the supervisor
        # ends this attempt itself (its health() raised).
        self._attempt = threading.Event()
        self._health_crash: BaseException | None = None
        self._restart_requested = False
        self._restart_asked_at: float | None = None  # until run() returns, or the interrupt after the grace
        self.worker = self._build()
        self.name = self.worker.name

    @property
    def critical(self) -> bool:
        return self.worker.critical

    @property
    def available(self) -> bool:
        """Its loop runs (OK, or DEGRADED because an outside link is down); crashed and
        waiting to restart, hung, failed or stopped, it is not."""
        return self.state in (OK, DEGRADED) and self.entered.is_set() and not self.backing_off

    def _build(self) -> Worker:
        try:
            return self._factory()
        except Exception as exc:  # handled as a crash of this worker by _loop
            return UnbuiltWorker(self._factory, exc)

    def heartbeat(self) -> None:
        self.last_heartbeat = self._sup.clock.monotonic()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"worker-{self.name}", daemon=True)
        self.thread.start()

    def request_stop(self) -> None:
        """Ask the worker to stop for good (`ctx.stopping`); does not wait."""
        with self._lock:
            self.stop_event.set()
            self._attempt.set()

    def request_restart(self) -> bool:
        """Ask the worker to leave run() (`ctx.stopping`) and start again, as a stop does: it
        gets `stop_timeout_s` to end cleanly (the intercom hangs up its calls, the printer
        saves its job) before its interrupt hook is called (check)."""
        with self._lock:
            if not self.running or self.stop_event.is_set():
                return False
            self._restart_requested = True
            self._restart_asked_at = self._sup.clock.monotonic()
            self._attempt.set()  # ctx.stopping: leave run(); ctx.shutdown stays clear (not for good)
        return True

    def _set(self, state: str, reason: str = "") -> None:
        with self._lock:
            self.state, self.reason = state, reason
            self._sup.health.set(f"worker.{self.name}", state, reason, critical=self.critical)

    def _run_once(self) -> tuple[BaseException | None, str]:
        """One attempt: (the crash or None, what crashed it)."""
        worker = self.worker
        if isinstance(worker, UnbuiltWorker):
            self.entered.set()
            return worker.error, "construction failed"
        with self._lock:
            self.hung = False
            self.running = True
            self._set(OK, "running")
        self.entered.set()
        crash: BaseException | None = None
        ctx = None
        try:
            ctx = self._sup.make_context(worker, self._attempt, self.heartbeat, shutdown=self.stop_event)
            worker.run(ctx)
        except BaseException as exc:  # a worker's SystemExit or KeyboardInterrupt is a crash too
            crash = exc
        finally:
            if ctx is not None:
                ctx.close()  # what this run registered (commands, simulator handlers) goes with it
        with self._lock:
            self.running = False
            if self._health_crash is not None:
                return self._health_crash, "health() raised"
        return crash, "crashed"

    def _loop(self) -> None:
        current_worker.set(self.name)
        clock, policy = self._sup.clock, self._sup.policy
        attempt = 0
        while True:
            with self._lock:
                if self.stop_event.is_set():
                    break
                self._attempt = threading.Event()
                self._health_crash = None
            started = clock.monotonic()
            self.heartbeat()
            crash, how = self._run_once()
            if self.stop_event.is_set():
                break
            with self._lock:
                requested, self._restart_requested = self._restart_requested, False
                self._restart_asked_at = None
            if requested:
                # Asked for (a Home Assistant button): not a crash, not counted toward the
                # restart intensity, no backoff. Commands are rate-limited before they get here.
                log.info("worker %s restarting on request", self.name, extra={"worker": self.name})
                with self._lock:
                    self._set(DEGRADED, "restarting on request")
                self._replace_worker()
                continue
            if crash is None and self.worker.restart in (TRANSIENT, TEMPORARY):
                self._set(STOPPED, "finished")
                return
            # Decide first, then change the state and count the crash in one step under the
            # lock, and only then log: an observer never sees the new count with the old state.
            now = clock.monotonic()
            why = f"{how}: {crash!r}" if crash is not None else "returned"
            delay, exceeded = None, False
            if crash is not None and self.worker.restart == TEMPORARY:
                state, reason = FAILED, f"{how} ({crash!r}); temporary workers are not restarted"
            else:
                if now - started > policy.within_s:
                    attempt = 0  # it ran well for a whole window: start the backoff afresh
                self._restart_times.append(now)
                while self._restart_times and now - self._restart_times[0] > policy.within_s:
                    self._restart_times.popleft()
                exceeded = len(self._restart_times) > policy.max_restarts
                if exceeded:
                    state, reason = FAILED, (f"{why}; {len(self._restart_times)} restarts within "
                                             f"{policy.within_s:g}s, giving up")
                else:
                    delay = policy.backoff.delay(attempt, self._rng)
                    attempt += 1
                    self.delays.append(delay)
                    state, reason = DEGRADED, f"{why}; restarting in {delay:.1f}s"
            with self._lock:
                # backing_off first: a watchdog tick between the two must not see a stale
                # heartbeat on a worker that is not running and call it HUNG
                self.backing_off = delay is not None
                self._set(state, reason)
                if crash is not None:
                    self.crashes += 1
            if crash is not None:
                # health() failures were logged with their traceback when they happened
                log.error("worker %s %s: %r", self.name, how, crash,
                          exc_info=None if how == "health() raised" else crash, extra={"worker": self.name})
            if exceeded:
                log.error("worker %s FAILED after %d restarts in %gs", self.name, len(self._restart_times),
                          policy.within_s, extra={"worker": self.name})
                if self.critical:
                    self._sup.escalate(self.name)
            if delay is None:
                return
            stop = self.stop_event.wait(delay)
            with self._lock:
                self.backing_off = False
            if stop:
                break
            self._replace_worker()
        self._set(STOPPED, "stopped")

    def _replace_worker(self) -> None:
        # The new object and the count change together: whoever sees restarts == n also
        # sees the n-th run's worker (never the previous one, whose `ready` is still set).
        worker = self._build()
        with self._lock:
            self.worker = worker
            self.restarts += 1

    def check(self, now: float) -> None:
        """Watchdog and health poll, called from the supervisor loop."""
        with self._lock:
            self._check(now)

    def _check(self, now: float) -> None:
        asked = self._restart_asked_at
        if asked is not None and self.running and now - asked >= self._sup.policy.stop_timeout_s:
            self._restart_asked_at = None
            log.warning("worker %s did not leave run() within %gs of a restart request; interrupting it",
                        self.name, self._sup.policy.stop_timeout_s, extra={"worker": self.name})
            self._interrupt()
        if not self.running or self.backing_off or self.state not in (OK, DEGRADED, HUNG):
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
        if self._health_crash is not None:
            return  # already ending this attempt; it is restarted when run() returns
        try:
            state, reason = self.worker.health() or (OK, "running")
        except Exception as exc:
            self._health_failed(exc)
            return
        self._set(state, reason)

    def _health_failed(self, exc: Exception) -> None:
        """A health() that raises is a crash of the worker: end this attempt (stopping +
        interrupt hook) so the runner restarts it under the usual backoff and intensity."""
        self._health_crash = exc
        log.error("health() of worker %s raised %r; restarting the worker", self.name, exc,
                  exc_info=exc, extra={"worker": self.name})
        self._set(DEGRADED, f"health() raised {exc!r}; restarting")
        self._attempt.set()
        self._interrupt()

    def _interrupt(self) -> None:
        try:
            self.worker.interrupt()
        except Exception:  # an interrupt hook must not take the supervisor down with it
            log.exception("interrupt hook of %s failed", self.name, extra={"worker": self.name})

    def fresh(self) -> bool:
        return not self.hung and self.state not in (FAILED, HUNG)


class Supervisor:
    def __init__(self, factories: list[Callable[[], Worker]],
                 make_context: Callable[..., WorkerContext],  # (worker, stopping, heartbeat, shutdown=)
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

    def restart(self, name: str) -> bool:
        """Ask a worker to restart (a Home Assistant button): interrupt it; it comes back at
        once, and the restart counts as neither a crash nor toward the restart intensity.
        False when it is not running now (backing off, failed, stopped)."""
        return self.runner(name).request_restart()

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
        return all(r.available for r in self.runners if r.critical)

    def critical_restarts(self) -> int:
        """Crashes plus restarts of the critical workers so far: grows with every one."""
        return sum(r.crashes + r.restarts for r in self.runners if r.critical)

    def stop(self) -> list[str]:
        """Stop every worker within one overall bound of 1.5 × `stop_timeout_s`, however many
        there are: ask all of them at once, in reverse start order, then wait for them on a
        shared deadline of `stop_timeout_s`; call the interrupt hooks of those still running
        and wait half that again. Returns the names that did not stop.

        A slow worker must not add its time to the others': systemd's TimeoutStopSec covers
        the whole process. Joins wait on real time (threads do), not the injected clock."""
        order = list(reversed(self.runners))
        for runner in order:
            runner.request_stop()
        started = time.monotonic()
        self._join(order, started + self.policy.stop_timeout_s)
        late = [r for r in order if r.thread is not None and r.thread.is_alive()]
        for runner in late:
            runner._interrupt()
        self._join(late, time.monotonic() + self.policy.stop_timeout_s / 2)
        stuck = [r.name for r in late if r.thread.is_alive()]
        for name in stuck:
            log.error("worker %s did not stop within %.1fs", name, time.monotonic() - started)
        return stuck

    @staticmethod
    def _join(runners: list[WorkerRunner], deadline: float) -> None:
        for runner in runners:
            if runner.thread is not None:
                runner.thread.join(max(0.0, deadline - time.monotonic()))
