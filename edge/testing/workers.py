"""Small workers with scripted behaviour, for testing supervisors and runtimes (load them in
a subprocess with `EDGE_RUNTIME_PLUGINS=edge.testing.workers:CrashingCritical`)."""

from __future__ import annotations

import socket
import threading

from edge.config import Key, Section
from edge.worker import Worker, WorkerContext


class IdleWorker(Worker):
    """Heartbeats until asked to stop."""

    name = "idle"
    heartbeat_timeout_s = 5.0

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.sleep(0.05):
            pass


class IdleEssential(IdleWorker):
    name = "idle_essential"
    essential = True
    start_order = 5


class CrashingWorker(Worker):
    """Raises as soon as it starts."""

    name = "crasher"

    def run(self, ctx: WorkerContext) -> None:
        ctx.heartbeat()
        raise RuntimeError("scripted crash")


class CrashingCritical(CrashingWorker):
    name = "critical_crasher"
    critical = True


class BlockedInRecv(Worker):
    """Blocks in recv() on a socket nobody writes to, without heartbeating, until its
    interrupt hook closes the socket: the shape of a worker stuck on a dead peer."""

    name = "blocked"
    critical = True
    heartbeat_timeout_s = 0.5

    def __init__(self, config):
        super().__init__(config)
        self.a, self.b = socket.socketpair()
        self.freed = False

    def run(self, ctx: WorkerContext) -> None:
        ctx.heartbeat()
        try:
            data = self.a.recv(1)  # blocks: b never sends
        finally:
            self.a.close()
            self.b.close()
        self.freed = True
        raise ConnectionError(f"socket shut down while blocked in recv() (got {data!r})")

    def interrupt(self) -> None:
        # shutdown() wakes a thread blocked in recv(); close() alone would not
        try:
            self.a.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class SlowToStop(Worker):
    """Busy in work that checks `stopping` only between steps of 0.3 s."""

    name = "slow_to_stop"
    heartbeat_timeout_s = 5.0

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.stopping.is_set():
            ctx.heartbeat()
            ctx.stopping.wait(0.3)


class GoesSilent(Worker):
    """Heartbeats until `silent` is set, then blocks without heartbeating and ignores its
    interrupt hook, like a thread stuck in native code; only a stop frees it."""

    name = "goes_silent"
    critical = True
    heartbeat_timeout_s = 0.3

    def __init__(self, config):
        super().__init__(config)
        self.silent = threading.Event()

    def run(self, ctx: WorkerContext) -> None:
        while not self.silent.is_set():
            if ctx.sleep(0.05):
                return
        ctx.stopping.wait()


class HangsAfter(Worker):
    """A critical worker that stops heartbeating `[hang_after] after_s` seconds after it
    starts and never recovers: for testing that systemd's watchdog restarts the service."""

    name = "hang_after"
    critical = True
    heartbeat_timeout_s = 1.0
    sections = (Section("hang_after", (
        Key("enabled", bool, True),
        Key("after_s", float, 2.0, "seconds of health before the hang", min=0),
    )),)

    def run(self, ctx: WorkerContext) -> None:
        if ctx.sleep(ctx.config.after_s):
            return
        ctx.stopping.wait()  # no heartbeat from here on
