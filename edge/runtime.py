"""The root of the process: assembles config, store, health, metrics, bus and the worker
supervisor, runs the main loop (watchdog ticks, systemd notifications, safe-mode
bookkeeping) and stops everything in reverse order.

Start order is the OTP root's: state directory and store, health and metrics, then the
workers in their `start_order` (the button path first, the MQTT link last). Store, health
and metrics are passive objects with no thread of their own to restart; what can fail and
restart is a worker, under the one_for_one supervisor. A lost broker or camera is a breaker
opening inside a worker, never a restart of the button path.

Exit codes (documented in README and listed in image/edge.service):
  0   stopped cleanly (SIGTERM / SIGINT)
  1   unexpected internal error
  70  a critical worker failed (restart intensity exceeded): systemd restarts the service
  75  restart requested (Home Assistant's "restart" button): systemd starts it again
  78  no usable configuration (invalid and no last known-good): RestartPreventExitStatus=78
"""

from __future__ import annotations

import errno
import faulthandler
import functools
import logging
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any, Mapping

from edge import __version__, jsonlog, malloc_tuning
from edge.assembly import config_path_for, load_config_with_fallback, save_last_good, state_dir_for, store_schemas
from edge.audit import AuditLog, key_path_for
from edge.breaker import BreakerBoard
from edge.bus import EventBus
from edge.commands import CommandRegistry
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Config, ConfigError
from edge.health import DEGRADED, FAILED, HUNG, OK, STARTING, HealthRegistry
from edge.health_http import HealthServer
from edge.metrics import make_registry
from edge.notify import SystemdNotifier, watchdog_interval
from edge.restart_requests import RestartRequests
from edge.states import StateBoard
from edge.stop_request import StopRequest
from edge.safemode import BootCounter
from edge.store import DB_NAME, RUNTIME_BUSY_TIMEOUT_S, Store, StoreUnavailable, disk_problem
from edge.supervisor import Policy, Supervisor
from edge.update import recover_at_boot
from edge.worker import Lasting, SimulatorControls, Worker, WorkerContext, boot_subscription

log = logging.getLogger("edge.runtime")

EXIT_OK, EXIT_ERROR, EXIT_CRITICAL, EXIT_RESTART, EXIT_NO_CONFIG = 0, 1, 70, 75, 78
STORE_RETRY_S = 10.0  # a store that failed to open is tried again this often


class Runtime:
    """`sim`: simulated hardware (`edge run --sim`): workers get `ctx.sim`, and
    `pin_factory` (a gpiozero MockFactory a test drives) is handed to them there."""

    def __init__(self, config: Config, classes: list[type[Worker]], state_dir: Path, *, sim: bool = False,
                 clock: Clock = SYSTEM_CLOCK, notifier: SystemdNotifier | None = None,
                 config_error: ConfigError | None = None, environ: Mapping[str, str] = os.environ,
                 pin_factory: Any = None):
        self.config = config
        self.classes = classes
        self.state_dir = Path(state_dir)
        self.sim = sim
        self.clock = clock
        self.notifier = notifier or SystemdNotifier()
        self.environ = environ
        self.config_error = config_error
        self.health = HealthRegistry(clock)
        self.breakers = BreakerBoard(clock, on_change=self._breaker_changed)
        self.bus = EventBus(clock)
        self.states = StateBoard()
        self.store: Store | None = None
        self.audit: AuditLog | None = None
        self.supervisor: Supervisor | None = None
        self.server: HealthServer | None = None
        self.safe_mode = False
        self._store_problem: str | None = None
        self._store_retry_at = 0.0
        self.sim_controls = SimulatorControls(pin_factory) if sim else None
        self.commands = CommandRegistry()
        self.lasting = Lasting()  # objects that outlive worker restarts; closed at stop()
        self.restart_requests = RestartRequests.from_config(config["supervisor"], clock)
        self.metrics = make_registry(self)
        self.boot_counter = BootCounter(self.state_dir / "boot-count")
        self.banner_lines: list[str] = []  # workers add what a person should know (e.g. the embedded broker)
        self._banner_printed = False
        self.exit_code = EXIT_OK
        self._stop = StopRequest()
        self._healthy_since: float | None = None
        self._critical_restarts_seen = 0
        self._boot_cleared = False
        self._last_status = ""

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only or full state disk degrades the device, never stops it
            log.error("cannot create the state directory %s (%s)", self.state_dir, exc)
        sm = self.config["safe_mode"]
        try:
            failed_boots = self.boot_counter.begin_boot()
        except OSError as exc:
            failed_boots = 0
            log.error("cannot update the boot counter (%s); safe mode detection is off", exc)
        self.safe_mode = failed_boots >= sm.boot_threshold
        cause = self.boot_counter.cause() if self.safe_mode else None
        if self.safe_mode:
            why = f"; the last was ended by {cause['worker']}: {cause['reason']}" if cause else ""
            log.error("%d quick failed boots in a row%s: SAFE MODE, starting only essential workers "
                      "(fix the cause, then restart the service or run `edge safe-mode clear`)", failed_boots, why)
            self.health.set("safe_mode", DEGRADED, f"{failed_boots} failed boots in a row{why}; only essential "
                                                   f"workers run; fix the cause and restart the service")
        if self.config_error:
            for problem in self.config_error.problems:
                log.error("invalid config %s: %s; running on the last known-good config",
                          self.config_error.source, problem)
            self.health.set("config", DEGRADED, f"invalid config {self.config_error.source} "
                                                f"({len(self.config_error.problems)} problems: "
                                                f"{self.config_error.problems[0]}); running on the last known-good")
        for warning in self.config.warnings:
            log.warning("config: %s", warning)
        self._open_store()
        self._start_server()
        policy = Policy.from_config(self.config["supervisor"])
        factories = []
        for cls in self.classes:
            if not cls.enabled(self.config):
                continue
            if self.safe_mode and not self._runs_in_safe_mode(cls, cause):
                continue
            if cls.bus_patterns_from_boot:  # a worker started late (the MQTT link) still hears everything
                boot_subscription(cls, self.lasting, self.bus)
            # a partial, not a lambda: the supervisor can tell the class (name, critical, ...)
            # even when its constructor raises
            factories.append(functools.partial(cls, self.config))
        self.supervisor = Supervisor(factories, self._context, self.health, self.clock, policy,
                                     on_escalate=self._escalate)
        self.supervisor.start()
        self.notifier.ready(self.health.summary())
        log.info("edge %s started: %s%s", __version__, ", ".join(r.name for r in self.supervisor.runners) or "no workers",
                 " (SAFE MODE)" if self.safe_mode else "")

    @staticmethod
    def _runs_in_safe_mode(cls: type[Worker], cause: dict | None) -> bool:
        """Essential workers run in safe mode (the button path, and the MQTT link so Home
        Assistant sees rings and the reason), except a non-critical one that itself ended
        the failed boots."""
        blamed = cause is not None and cause.get("worker") == cls.name
        return cls.essential and (cls.critical or not blamed)

    def announce(self, line: str) -> None:
        """A line for the person at the terminal (stderr: stdout is the JSON log); shown in
        the simulator's banner, or at once when the banner is already out."""
        if line in self.banner_lines:
            return
        self.banner_lines.append(line)
        if self._banner_printed:
            print(f"  {line}", file=sys.stderr, flush=True)

    def print_sim_banner(self) -> None:
        """Tell the person at the laptop what is running and what to try (stderr: stdout is
        the JSON log)."""
        endpoint = f"http://{self.server.address[0]}:{self.server.port}" if self.server else "(none)"
        lines = [f"edge simulator: node {self.config['node'].id!r}, state in {self.state_dir}",
                 f"  health:  {endpoint}/health   (edge status --sim)",
                 f"  workers: {', '.join(r.name for r in self.supervisor.runners) or 'none'}"]
        lines += [f"  {line}" for line in self.banner_lines]
        if self.sim_controls and self.sim_controls.handlers:
            lines.append(f"  try:     edge sim {' | '.join(n for n in self.sim_controls.names() if n != 'emit')}")
        lines.append("  Ctrl-C stops it.")
        print("\n".join(lines), file=sys.stderr, flush=True)
        self._banner_printed = True

    def _store_health(self, ok: bool, reason: str) -> None:
        self.health.set("store", OK if ok else DEGRADED, reason or "ok")

    def _open_store(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.store = Store(self.state_dir / DB_NAME, self.clock, on_health=self._store_health,
                               schemas=store_schemas(self.classes), busy_timeout_s=RUNTIME_BUSY_TIMEOUT_S)
            self.health.set("store", OK, "ok")
        except (OSError, sqlite3.Error, StoreUnavailable) as exc:
            # The doorbell must ring without a store: degrade, never stop; tried again every
            # STORE_RETRY_S (retry_store), and workers see it through ctx.store once it opens.
            reason = f"store unavailable: {disk_problem(self.state_dir) or exc}"
            if self.state_dir.is_dir() and not os.access(self.state_dir, os.W_OK):
                reason += f"; {self.state_dir} is read-only: check the SD card and remount it read-write"
            if reason != self._store_problem:
                log.error("%s: running without persistence (tried again every %g s)", reason, STORE_RETRY_S)
            self._store_problem = reason
            self.health.set("store", DEGRADED, reason)
            self.store = None
        if self.store is not None:
            try:
                self.audit = AuditLog(self.store, key_path_for(self.config, self.state_dir),
                                      self.state_dir / "audit.anchor")
            except (OSError, StoreUnavailable) as exc:
                # e.g. the key is missing while records exist: a new key would make every
                # record look edited, so run without auditing and say so
                log.error("audit log unavailable (%s): door openings are not audited", exc)
                self.health.set("audit", DEGRADED, f"audit log unavailable: {exc}")
                self.audit = None

    def retry_store(self, now: float) -> None:
        """A store that could not be opened at boot (full or read-only disk) is tried again,
        so the device recovers when space or write access returns, without a restart."""
        if self.store is not None or now < self._store_retry_at:
            return
        self._store_retry_at = now + STORE_RETRY_S
        self._open_store()
        if self.store is not None:
            self._store_problem = None
            log.info("the store is back: events are written to %s again", self.store.path)

    def _start_server(self) -> None:
        cfg = self.config["health"]

        def serve(port: int) -> HealthServer:
            return HealthServer(cfg.host, port, self.health, self.metrics, self.ready, token=cfg.secret("token"),
                                sim_commands=self.sim_controls.handlers if self.sim_controls else None,
                                node=self.config["node"].id)
        try:
            try:
                self.server = serve(cfg.port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not cfg.port:
                    raise
                # Taken (another device on this machine?): serve on a free port rather than
                # not at all; the CLI finds it through the endpoint file and checks the node.
                self.server = serve(0)
                log.warning("health port %d is taken; serving on %d instead (edge status finds it)",
                            cfg.port, self.server.port)
                self.health.set("health_http", DEGRADED, f"port {cfg.port} is taken; serving on {self.server.port} "
                                                         f"(set [health] port to a free one)")
        except OSError as exc:
            log.error("health server cannot bind %s:%s (%s); set [health] port to a free port",
                      cfg.host, cfg.port, exc)
            self.health.set("health_http", DEGRADED, f"cannot bind {cfg.host}:{cfg.port}: {exc.strerror}")
            return
        self.server.start()
        try:  # `edge status` and `edge sim` find the running device through this file
            (self.state_dir / "endpoint").write_text(f"http://{self.server.address[0]}:{self.server.port}\n")
        except OSError:
            pass
        log.info("health endpoint on http://%s:%d/health", *self.server.address)

    def _forget_endpoint(self) -> None:
        """A stopped device leaves no endpoint behind for `edge status` to find (unless
        another device has written its own there since)."""
        path = self.state_dir / "endpoint"
        try:
            if path.read_text().strip() == f"http://{self.server.address[0]}:{self.server.port}":
                path.unlink()
        except OSError:
            pass  # never written, or already gone

    def _context(self, worker: Worker, stopping: threading.Event, heartbeat,
                 shutdown: threading.Event | None = None) -> WorkerContext:
        own = worker.sections[0].name if worker.sections else None
        return WorkerContext(worker, stopping=stopping, clock=self.clock, bus=self.bus, store=lambda: self.store,
                             breakers=self.breakers, health=self.health, metrics=self.metrics, states=self.states,
                             config=self.config[own] if own else None, on_heartbeat=heartbeat,
                             shutdown=shutdown, state_dir=self.state_dir, safe_mode=self.safe_mode, node=self.config["node"],
                             commands=self.commands, audit=lambda: self.audit, sim=self.sim_controls,
                             lasting=self.lasting, announce=self.announce, runtime=self)

    def _breaker_changed(self, breaker) -> None:
        state = breaker.state
        self.health.set(f"breaker.{breaker.name}", OK if state == "closed" else DEGRADED,
                        "closed" if state == "closed" else f"{state}: {breaker.last_error}")

    def _escalate(self, name: str) -> None:
        log.critical("critical worker %s failed: exiting with %d so systemd restarts the service", name, EXIT_CRITICAL)
        runner = self.supervisor.runner(name) if self.supervisor else None
        try:
            self.boot_counter.blame(name, runner.reason if runner else "failed")
        except OSError as exc:
            log.error("cannot record the cause of this failed boot: %s", exc)
        self.exit_code = EXIT_CRITICAL
        self._stop.set()

    def ready(self) -> bool:
        return self.supervisor is not None and self.supervisor.critical_running()

    # -- main loop -----------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def stop_on_signals(self) -> None:
        """SIGTERM (systemd) and SIGINT (Ctrl-C) end the loop. Main thread only."""
        self._stop.install()

    def request_restart(self) -> None:
        """Stop cleanly with EXIT_RESTART so systemd (Restart=on-failure) starts us again."""
        self.exit_code = EXIT_RESTART
        self._stop.set()

    def tick_interval(self) -> float:
        timeouts = [r.worker.heartbeat_timeout_s for r in self.supervisor.runners] if self.supervisor else []
        # Checking at a third of the shortest timeout marks a hang within 1⅓ of its timeout.
        candidates = [0.5] + [t / 3 for t in timeouts]
        interval = watchdog_interval(self.environ)
        if interval:
            candidates.append(interval / 2)
        return max(0.02, min(candidates))

    def loop(self) -> int:
        """Run until asked to stop; returns the exit code."""
        ping_every = watchdog_interval(self.environ)
        last_ping = None
        tick = self.tick_interval()
        while not self._stop.wait(tick):
            self.supervisor.tick()
            now = self.clock.monotonic()
            # Only this loop pets systemd, and only while every critical worker is fresh:
            # a timer thread would keep petting through the very hang it should catch.
            if ping_every and self.supervisor.all_critical_fresh() and (
                    last_ping is None or now - last_ping >= ping_every):
                self.notifier.watchdog()
                last_ping = now
            self._track_good_boot(now)
            self.retry_store(now)
            if self.store is not None and self.store.pending_events:
                self.store.flush_pending()  # rings kept in memory while the store was locked or full
            summary = self.health.summary()
            if summary != self._last_status:
                self._last_status = summary
                self.notifier.status(summary)
        for name in self._stop.signals:
            log.info("received %s: stopping", name)
        return self.exit_code

    def _track_good_boot(self, now: float) -> None:
        """Clear the boot counter after `healthy_after_s` in which no critical worker
        crashed, restarted, hung or failed. DEGRADED from outside (no broker, no camera)
        still counts as healthy: a slow critical crash loop (a critical worker restarting
        with backoff, DEGRADED in between) does not."""
        if self._boot_cleared:
            return
        sup = self.supervisor
        restarts = sup.critical_restarts() if sup is not None else 0
        critical_unwell = sup is not None and any(
            r.backing_off or r.state in (STARTING, FAILED, HUNG) for r in sup.runners if r.critical)
        if self.health.overall() == FAILED or critical_unwell:
            self._critical_restarts_seen = restarts
            self._healthy_since = None
            return
        if restarts != self._critical_restarts_seen:  # crashed and running again: the minute starts now
            self._critical_restarts_seen = restarts
            self._healthy_since = now
            return
        if self._healthy_since is None:
            self._healthy_since = now
        elif now - self._healthy_since >= self.config["safe_mode"].healthy_after_s:
            self._clear_boot_counter()
            if self._boot_cleared and not self.safe_mode and not self.config_error:
                save_last_good(self.config, self.state_dir)  # it ran well: now it is known-good

    def _clear_boot_counter(self) -> None:
        try:
            self.boot_counter.clear()
            self._boot_cleared = True
        except OSError as exc:
            log.error("cannot clear the boot counter: %s", exc)

    def stop(self) -> None:
        self.notifier.stopping()
        stuck = self.supervisor.stop() if self.supervisor else []
        if stuck:
            log.error("workers did not stop in time: %s", ", ".join(stuck))
        self.lasting.close_all()
        if self.server:
            self.server.stop()
            self._forget_endpoint()
        if self.store:
            self.store.close()
        if self.exit_code in (EXIT_OK, EXIT_RESTART):
            # A clean stop is not a failed boot; in safe mode it is the way out: the person
            # fixed the cause and restarted the service (if not, the boots fail again).
            self._clear_boot_counter()
        self._stop.close()
        log.info("stopped (exit code %d)", self.exit_code)


def run(config_path: str | None, sim: bool, environ: Mapping[str, str] = os.environ) -> int:
    """`edge run`: the whole process lifetime."""
    # A systemd watchdog abort (SIGABRT) then dumps every thread's stack to the journal.
    faulthandler.enable()
    malloc_tuning.tune()  # before any thread or child exists
    jsonlog.setup()
    state_dir = state_dir_for(sim, environ)
    if not sim:  # a power cut mid-update left an uncommitted release: roll it back first
        committed = recover_at_boot(environ, state_dir)
        if committed is not None:
            log.warning("starting the committed release instead: %s", committed)
            os.execv(committed, [str(committed), *sys.argv[1:]])
    path = config_path_for(config_path, environ)
    try:
        config, classes, error = load_config_with_fallback(path, sim, state_dir, environ)
    except ConfigError as exc:
        log.critical("no usable config: %s; fix it (check with `edge config check`) - exiting with %d",
                     exc, EXIT_NO_CONFIG)
        return EXIT_NO_CONFIG
    jsonlog.setup(config["logging"].level, fmt=config["logging"].format)
    runtime = Runtime(config, classes, state_dir, sim=sim, config_error=error, environ=environ)
    runtime.stop_on_signals()
    try:
        runtime.start()
        if sim:
            runtime.print_sim_banner()
        code = runtime.loop()
    finally:
        runtime.stop()
    return code
