"""Supervisor: restart policies, backoff, restart intensity, watchdog, ordered start/stop."""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time

from runtime_helpers import context_factory, edge_env, make_config, spawn_edge

from edge.breaker import Backoff
from edge.clock import Clock, FakeClock
from edge.health import DEGRADED, FAILED, HUNG, OK, STOPPED, HealthRegistry
from edge.runtime import Runtime
from edge.supervisor import Policy, Supervisor
from edge.testing.waiting import scaled, wait_for
from edge.testing.workers import BlockedInRecv, CrashingWorker, IdleWorker
from edge.worker import TEMPORARY, TRANSIENT, Worker

FAST = Policy(max_restarts=3, within_s=60, backoff=Backoff(initial=0.01, maximum=1.0, factor=2.0, jitter=0.0),
              stop_timeout_s=2.0)


def supervise(*classes, policy=FAST, clock=None, on_escalate=None):
    clock = clock or Clock()
    health = HealthRegistry(clock)
    sup = Supervisor([functools.partial(c, None) for c in classes], context_factory(health, clock), health, clock,
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
    out, _ = proc.communicate(timeout=scaled(30))
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
    seen = []  # (state, when) of the worker, as the health registry saw them
    health.listeners.append(lambda c: c.name == "worker.blocked" and seen.append((c.state, sup.clock.monotonic())))
    sup.start()
    runner = sup.runner("blocked")
    first = runner.worker
    stop = threading.Event()
    # The runtime's main loop ticks at a third of the shortest heartbeat timeout; do the same.
    ticker = threading.Thread(target=lambda: [sup.tick() for _ in iter(lambda: stop.wait(0.5 / 3), True)])
    ticker.start()
    try:
        started = runner.last_heartbeat
        wait_for(lambda: any(state == HUNG for state, _ in seen), timeout=10, message="HUNG")
        hung_at = next(when for state, when in seen if state == HUNG)
        # 1⅓ × the timeout by design; up to 2 × leaves a slow CPU (a Pi 3, emulation) room
        assert hung_at - started <= 2 * BlockedInRecv.heartbeat_timeout_s
        # the interrupt hook shut the socket down: the worker left recv() and crashed out
        wait_for(lambda: first.freed, timeout=10, message="worker freed from recv()")
        wait_for(lambda: runner.crashes == 1, timeout=10, message="crash recorded")
        states = [state for state, _ in seen]
        assert states.index(HUNG) < states.index(DEGRADED)  # HUNG first, then backing off to restart
    finally:
        stop.set()
        ticker.join()
        sup.stop()


def test_a_crash_changes_the_state_and_the_count_together_before_it_is_logged():
    # Issue 15: the crash was counted, its traceback logged, and only then DEGRADED set, so
    # an observer could see the new count with the old state (6 failures in 14 under emulation).
    sup, health = supervise(CrashingWorker, policy=Policy(max_restarts=3, within_s=60, backoff=Backoff(
        initial=5.0, jitter=0.0), stop_timeout_s=2.0))
    at_log, at_degraded = [], []

    class Snapshot(logging.Handler):
        def emit(self, record):
            if "crasher crashed" in record.getMessage():
                runner = sup.runner("crasher")
                at_log.append((runner.crashes, runner.state))

    health.listeners.append(lambda c: c.name == "worker.crasher" and c.state == DEGRADED
                            and at_degraded.append(sup.runner("crasher").crashes))
    handler = Snapshot(logging.ERROR)
    logging.getLogger("edge.supervisor").addHandler(handler)
    sup.start()
    try:
        wait_for(lambda: at_log, timeout=5, message="the crash logged")
        assert at_log == [(1, DEGRADED)]  # counted and DEGRADED by the time anyone reads the log
        assert at_degraded == [0]  # the state first, then the count, in one step under the lock
    finally:
        logging.getLogger("edge.supervisor").removeHandler(handler)
        sup.stop()


class Stalls(Worker):
    """Heartbeats only when the test says so; counts its interrupt hook's calls."""

    name = "stalls"
    critical = True
    heartbeat_timeout_s = 10.0

    def __init__(self, config):
        super().__init__(config)
        self.beat, self.beaten = threading.Event(), threading.Event()
        self.interrupts = 0

    def run(self, ctx):
        ctx.heartbeat()
        while not ctx.stopping.is_set():
            if self.beat.wait(0.01):
                self.beat.clear()
                ctx.heartbeat()
                self.beaten.set()

    def interrupt(self):
        self.interrupts += 1


def test_hang_is_detected_exactly_at_the_timeout_on_the_injected_clock_and_recovers_on_a_heartbeat():
    clock = FakeClock()
    sup, health = supervise(Stalls, clock=clock)
    sup.start()
    try:
        runner = sup.runner("stalls")
        worker, timeout, t0 = runner.worker, Stalls.heartbeat_timeout_s, runner.last_heartbeat
        runner.check(t0 + timeout - 0.01)
        assert runner.state == OK and worker.interrupts == 0 and sup.all_critical_fresh()
        runner.check(t0 + timeout + 0.01)
        assert runner.state == HUNG and health.get("worker.stalls").state == HUNG
        assert worker.interrupts == 1 and not sup.all_critical_fresh()
        runner.check(t0 + timeout + 5)  # still silent: still HUNG, not interrupted again
        assert runner.state == HUNG and worker.interrupts == 1
        clock.advance(timeout + 5)
        worker.beat.set()
        wait_for(worker.beaten.is_set, timeout=5, message="a fresh heartbeat")
        assert runner.last_heartbeat == clock.monotonic()
        runner.check(clock.monotonic() + 0.01)
        assert runner.state == OK and not runner.hung and sup.all_critical_fresh()
        assert worker.interrupts == 1 and runner.crashes == 0
    finally:
        sup.stop()


def test_a_tick_while_a_crashed_worker_backs_off_never_marks_it_hung():
    clock = FakeClock()
    sup, health = supervise(CrashingWorker, clock=clock, policy=Policy(
        max_restarts=3, within_s=60, backoff=Backoff(initial=5.0, jitter=0.0), stop_timeout_s=2.0))
    seen_at_degraded = []

    def tick_at_the_state_change(comp):
        # runs on the runner thread right when it reports "restarting in ...": the moment
        # a supervisor tick could land between the state change and the backoff
        if comp.name == "worker.crasher" and comp.state == DEGRADED:
            clock.advance(10 * CrashingWorker.heartbeat_timeout_s)
            runner = sup.runner("crasher")
            runner.check(clock.monotonic())
            seen_at_degraded.append(runner.state)

    health.listeners.append(tick_at_the_state_change)
    sup.start()
    try:
        wait_for(lambda: seen_at_degraded, timeout=5, message="the worker backing off")
        assert seen_at_degraded == [DEGRADED]
        assert not sup.runner("crasher").hung
    finally:
        sup.stop()


class BrokenConstructor(IdleWorker):
    name = "broken_ctor"

    def __init__(self, config):
        raise ValueError("bad pin number 99")


def test_worker_whose_constructor_raises_at_start_is_a_crash_not_a_dead_supervisor(caplog):
    sup, health = supervise(BrokenConstructor, IdleWorker)
    with caplog.at_level(logging.ERROR, logger="edge.supervisor"):
        sup.start()
        try:
            runner = sup.runner("broken_ctor")
            wait_for(lambda: runner.state == FAILED, timeout=5, message="FAILED")
            assert runner.crashes == FAST.max_restarts + 1 and runner.restarts == FAST.max_restarts
            assert "construction failed: ValueError('bad pin number 99')" in health.get("worker.broken_ctor").reason
            assert sup.runner("idle").state == OK
        finally:
            sup.stop()
    crash_logs = [r for r in caplog.records if "broken_ctor construction failed" in r.getMessage()]
    assert crash_logs and crash_logs[0].exc_info[0] is ValueError  # with the traceback


def test_critical_worker_whose_constructor_raises_escalates():
    class CriticalBroken(BrokenConstructor):
        name = "critical_broken"
        critical = True

    escalated = []
    sup, health = supervise(CriticalBroken, on_escalate=escalated.append)
    sup.start()
    try:
        wait_for(lambda: escalated, timeout=5, message="escalation")
        assert escalated == ["critical_broken"] and health.overall() == FAILED
    finally:
        sup.stop()


def test_worker_whose_constructor_raises_on_restart_is_restarted_again():
    class FlakyConstructor(CrashingWorker):
        name = "flaky_ctor"
        builds = 0

        def __init__(self, config):
            type(self).builds += 1
            if type(self).builds == 2:  # the first restart cannot build it
                raise OSError("camera device busy")
            super().__init__(config)

        def run(self, ctx):
            if type(self).builds == 1:
                raise RuntimeError("first run crashes")
            while not ctx.sleep(0.02):
                pass

    sup, health = supervise(FlakyConstructor, policy=Policy(max_restarts=10, within_s=60, backoff=Backoff(
        initial=0.01, jitter=0.0), stop_timeout_s=2.0))
    sup.start()
    try:
        runner = sup.runner("flaky_ctor")
        wait_for(lambda: FlakyConstructor.builds == 3 and runner.state == OK, timeout=5, message="running again")
        assert runner.crashes == 2 and runner.restarts == 2
        assert runner.thread.is_alive()
    finally:
        sup.stop()


class HealthRaises(IdleWorker):
    name = "bad_health"
    instances = []

    def __init__(self, config):
        super().__init__(config)
        self.instances.append(self)

    def health(self):
        if len(self.instances) == 1:
            raise KeyError("camera")
        return None


def test_health_that_raises_is_a_crash_of_that_worker_and_it_is_restarted(caplog):
    sup, health = supervise(HealthRaises)
    sup.start()
    try:
        runner = sup.runner("bad_health")
        with caplog.at_level(logging.ERROR, logger="edge.supervisor"):
            sup.tick()  # the main loop's poll: must not raise
        assert runner.state == DEGRADED and "health() raised KeyError('camera')" in runner.reason
        wait_for(lambda: runner.restarts == 1 and runner.state == OK, timeout=5, message="restarted")
        assert runner.crashes == 1 and len(HealthRaises.instances) == 2
        sup.tick()
        assert runner.state == OK
        logged = [r for r in caplog.records if "health() of worker bad_health raised" in r.getMessage()]
        assert logged and logged[0].exc_info[0] is KeyError
    finally:
        sup.stop()


def test_health_listener_that_raises_is_logged_and_does_not_stop_the_worker(caplog):
    sup, health = supervise(IdleWorker)
    later = []

    def broken(comp):
        raise RuntimeError("listener bug")

    health.listeners += [broken, later.append]
    with caplog.at_level(logging.ERROR, logger="edge.health"):
        sup.start()  # the runner thread calls the listeners when the worker starts
        try:
            runner = sup.runner("idle")
            wait_for(lambda: runner.state == OK, timeout=5, message="running")
            assert runner.thread.is_alive() and [c.state for c in later] == [OK]
            health.set("store", DEGRADED, "disk full")  # and on the caller's thread: no exception
        finally:
            sup.stop()
    assert any("health listener" in r.getMessage() and r.exc_info for r in caplog.records)


class IgnoresStopping(Worker):
    """Blocked in recv() and never looks at `stopping`: only its interrupt hook frees it."""

    heartbeat_timeout_s = 60.0

    def __init__(self, config):
        super().__init__(config)
        self.a, self.b = socket.socketpair()
        self.interrupts = 0

    def run(self, ctx):
        ctx.heartbeat()
        try:
            self.a.recv(1)
        finally:
            self.a.close()
            self.b.close()

    def interrupt(self):
        self.interrupts += 1
        try:
            self.a.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def ignoring(name, order):
    return type(f"Ignores_{name}", (IgnoresStopping,), {"name": name, "start_order": order})


def test_stop_has_one_deadline_for_all_workers_not_one_each():
    policy = Policy(max_restarts=3, within_s=60, backoff=FAST.backoff, stop_timeout_s=1.0)
    sup, _ = supervise(ignoring("a", 1), ignoring("b", 2), ignoring("c", 3), policy=policy)
    sup.start()
    started = time.monotonic()
    assert sup.stop() == []
    took = time.monotonic() - started
    # one worker after another would take 3 × 1 s before the last interrupt hook; 1 s of
    # room over 1.5 × for a slow CPU (a Pi 3, emulation) still tells the two apart
    assert policy.stop_timeout_s <= took < 1.5 * policy.stop_timeout_s + 1.0
    assert [r.worker.interrupts for r in sup.runners] == [1, 1, 1]
    assert all(not r.thread.is_alive() for r in sup.runners)


def test_workers_start_in_order_and_are_asked_to_stop_in_reverse():
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
    signalled = []
    for runner in sup.runners:
        def request_stop(runner=runner, original=runner.request_stop):
            signalled.append(runner.name)
            original()
        runner.request_stop = request_stop
    sup.start()
    wait_for(lambda: len(events) == 3, timeout=5, message="three starts")
    assert sup.stop() == []
    assert events[:3] == [("start", "doorbell"), ("start", "system"), ("start", "mqtt")]
    # all are asked at once (so one slow worker cannot spend the others' stop time), last started first
    assert signalled == ["mqtt", "system", "doorbell"]
    assert sorted(events[3:]) == [("stop", "doorbell"), ("stop", "mqtt"), ("stop", "system")]


def test_runtime_stops_within_one_and_a_half_stop_timeouts_when_workers_ignore_stopping(tmp_path):
    classes = [ignoring("front", 10), ignoring("middle", 40), ignoring("back", 90)]
    env = {"EDGE_HEALTH_PORT": "0", "EDGE_SUPERVISOR_STOP_TIMEOUT_S": "1.0"}
    rt = Runtime(make_config(classes, env=env), classes, tmp_path / "state")
    rt.start()
    wait_for(rt.ready, timeout=10, message="started")
    started = time.monotonic()
    rt.stop()
    took = time.monotonic() - started
    # the bound systemd's TimeoutStopSec must cover: 1.5 × stop_timeout_s for all workers
    # together (one after another: 3 s), with 1 s of room for a slow CPU
    assert 1.0 <= took < 1.5 * 1.0 + 1.0
    assert all(r.worker.interrupts == 1 and not r.thread.is_alive() for r in rt.supervisor.runners)
    assert {r.state for r in rt.supervisor.runners} == {STOPPED}
