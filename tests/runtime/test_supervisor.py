"""Supervisor: restart policies, backoff, restart intensity, watchdog, ordered start/stop."""

from __future__ import annotations

import subprocess
import threading

from runtime_helpers import context_factory, edge_env, spawn_edge

from edge.breaker import Backoff
from edge.clock import Clock
from edge.health import DEGRADED, FAILED, HUNG, OK, STOPPED, HealthRegistry
from edge.supervisor import Policy, Supervisor
from edge.testing.waiting import wait_for
from edge.testing.workers import BlockedInRecv, CrashingWorker, IdleWorker
from edge.worker import TEMPORARY, TRANSIENT, Worker

FAST = Policy(max_restarts=3, within_s=60, backoff=Backoff(initial=0.01, maximum=1.0, factor=2.0, jitter=0.0),
              stop_timeout_s=2.0)


def supervise(*classes, policy=FAST, clock=None, on_escalate=None):
    clock = clock or Clock()
    health = HealthRegistry(clock)
    sup = Supervisor([lambda c=c: c(None) for c in classes], context_factory(health, clock), health, clock,
                     policy, on_escalate=on_escalate)
    return sup, health


def test_crashed_worker_is_restarted_with_growing_backoff():
    sup, health = supervise(CrashingWorker, policy=Policy(max_restarts=10, within_s=60, backoff=Backoff(
        initial=0.01, maximum=5, factor=2.0, jitter=0.0)))
    sup.start()
    try:
        runner = sup.runner("crasher")
        wait_for(lambda: runner.restarts >= 4, timeout=5, message="four restarts")
        assert runner.delays[:4] == [0.01, 0.02, 0.04, 0.08]
    finally:
        sup.stop()


def test_crash_loop_marks_worker_failed_and_device_degraded():
    sup, health = supervise(CrashingWorker, IdleWorker)
    sup.start()
    try:
        wait_for(lambda: sup.runner("crasher").state == FAILED, timeout=5, message="FAILED")
        runner = sup.runner("crasher")
        assert runner.restarts == FAST.max_restarts
        assert "restarts within 60s" in health.get("worker.crasher").reason
        assert health.overall() == DEGRADED  # a non-critical failure degrades, it does not fail the device
        assert sup.runner("idle").state == OK
    finally:
        sup.stop()


def test_critical_crash_loop_escalates():
    class Critical(CrashingWorker):
        critical = True

    escalated = threading.Event()
    sup, health = supervise(Critical, on_escalate=lambda name: escalated.set())
    sup.start()
    try:
        assert escalated.wait(5)
        assert health.overall() == FAILED
    finally:
        sup.stop()


def test_critical_crash_loop_exits_process_non_zero(tmp_path):
    env = edge_env(tmp_path / "state", EDGE_RUNTIME_PLUGINS="edge.testing.workers:CrashingCritical",
                   EDGE_SUPERVISOR_BACKOFF_INITIAL_S="0.01", EDGE_SUPERVISOR_MAX_RESTARTS="2")
    proc = spawn_edge(["run", "--sim"], env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 70, out.decode()[-2000:]
    assert b"critical worker critical_crasher failed" in out


def test_transient_worker_that_returns_is_not_restarted():
    class Done(Worker):
        name = "done"
        restart = TRANSIENT

        def run(self, ctx):
            ctx.heartbeat()

    sup, health = supervise(Done)
    sup.start()
    try:
        wait_for(lambda: sup.runner("done").state == STOPPED, timeout=5, message="STOPPED")
        assert sup.runner("done").restarts == 0
    finally:
        sup.stop()


def test_temporary_worker_that_crashes_is_failed_without_restart():
    class Once(CrashingWorker):
        name = "once"
        restart = TEMPORARY

    sup, health = supervise(Once)
    sup.start()
    try:
        wait_for(lambda: sup.runner("once").state == FAILED, timeout=5, message="FAILED")
        assert sup.runner("once").restarts == 0
    finally:
        sup.stop()


def test_hung_worker_is_marked_hung_within_twice_its_timeout_and_freed_from_recv():
    sup, health = supervise(BlockedInRecv, policy=Policy(max_restarts=100, within_s=60, backoff=Backoff(
        initial=5.0, jitter=0.0), stop_timeout_s=2.0))
    sup.start()
    runner = sup.runner("blocked")
    first = runner.worker
    stop = threading.Event()
    # The runtime's main loop ticks at a third of the shortest heartbeat timeout; do the same.
    ticker = threading.Thread(target=lambda: [sup.tick() for _ in iter(lambda: stop.wait(0.5 / 3), True)])
    ticker.start()
    try:
        started = runner.last_heartbeat
        wait_for(lambda: health.get("worker.blocked").state == HUNG or runner.crashes, timeout=5, message="HUNG")
        hung_after = sup.clock.monotonic() - started
        assert hung_after <= 2 * BlockedInRecv.heartbeat_timeout_s
        # the interrupt hook shut the socket down: the worker left recv() and crashed out
        wait_for(lambda: first.freed, timeout=2, message="worker freed from recv()")
        wait_for(lambda: runner.crashes == 1, timeout=2, message="crash recorded")
    finally:
        stop.set()
        ticker.join()
        sup.stop()


def test_workers_start_in_order_and_stop_in_reverse():
    events = []

    def make(name, order):
        class W(Worker):
            start_order = order

            def run(self, ctx):
                events.append(("start", self.name))
                while not ctx.sleep(0.02):
                    pass
                events.append(("stop", self.name))
        W.name = name
        return W

    sup, _ = supervise(make("mqtt", 90), make("doorbell", 10), make("system", 40))
    sup.start()
    wait_for(lambda: len(events) == 3, timeout=5, message="three starts")
    assert sup.stop() == []
    assert events == [("start", "doorbell"), ("start", "system"), ("start", "mqtt"),
                      ("stop", "mqtt"), ("stop", "system"), ("stop", "doorbell")]
