"""Restarts asked for by a command (Home Assistant's buttons, or anyone who can publish to the
broker) can never take the bell down: they are no crashes, are rate-limited, and the button
path is not restarted on request at all."""

from __future__ import annotations

import functools

import pytest
import restart_storm
from runtime_helpers import context_factory, edge_env, running_edge

from edge.breaker import Backoff
from edge.clock import Clock, FakeClock
from edge.commands import CommandRejected
from edge.health import HealthRegistry
from edge.restart_requests import RATE_LIMITED, RestartRequests
from edge.supervisor import Policy, Supervisor
from edge.testing.waiting import wait_for
from edge.testing.workers import IdleWorker

STRICT = Policy(max_restarts=1, within_s=60, backoff=Backoff(initial=5.0, maximum=5.0, jitter=0.0),
                stop_timeout_s=2.0)


class CriticalIdle(IdleWorker):
    name = "critical_idle"
    critical = True


def test_restarts_on_request_are_no_crashes_and_never_exhaust_the_restart_intensity():
    clock = Clock()
    health = HealthRegistry(clock)
    escalated = []
    sup = Supervisor([functools.partial(CriticalIdle, None)], context_factory(health, clock), health, clock, STRICT,
                     on_escalate=escalated.append)
    sup.start()
    try:
        runner = sup.runner("critical_idle")
        for n in range(1, 6):  # five times the intensity of one restart a minute
            wait_for(lambda: runner.running, 5, message="the worker running")
            assert sup.restart("critical_idle")
            wait_for(lambda n=n: runner.restarts == n and runner.running, 5, message=f"restart {n}")
        assert runner.crashes == 0 and not escalated and runner.state == "OK"
        assert runner.delays == []  # no backoff: it is back at once
    finally:
        sup.stop()


def limiter(clock, **kw) -> RestartRequests:
    return RestartRequests(clock, **{"per_worker": 3, "window_s": 600, "runtime_min_uptime_s": 300, **kw})


def test_a_worker_restarts_on_request_at_most_n_times_per_window():
    clock = FakeClock()
    requests = limiter(clock)
    for _ in range(3):
        requests.allow_worker("system", button_path=False)
    with pytest.raises(CommandRejected) as refused:
        requests.allow_worker("system", button_path=False)
    assert refused.value.code == RATE_LIMITED and "try again in 600 s" in str(refused.value)
    requests.allow_worker("mqtt", button_path=False)  # per worker
    clock.advance(600)
    requests.allow_worker("system", button_path=False)


def test_the_button_path_is_never_restarted_on_request():
    with pytest.raises(CommandRejected) as refused:
        limiter(FakeClock()).allow_worker("doorbell", button_path=True)
    assert refused.value.code == "unauthorized" and "would silence the bell" in str(refused.value)


def test_the_runtime_restarts_on_request_only_after_its_minimum_uptime():
    clock = FakeClock()
    requests = limiter(clock)
    clock.advance(299)
    with pytest.raises(CommandRejected) as refused:
        requests.allow_runtime()
    assert refused.value.code == RATE_LIMITED and "sudo systemctl restart edge" in str(refused.value)
    clock.advance(1)
    requests.allow_runtime()


def test_a_storm_of_restart_commands_leaves_the_device_running_and_every_press_rings(tmp_path, mosquitto):
    """30 restart commands of both kinds within a minute to a real `edge run --sim` over a
    real broker: the process keeps running, every press between them rings, the refusals
    are answered and counted. tests/image/test_nspawn_restart_storm.py does the same to the
    real unit under systemd."""
    env = edge_env(tmp_path / "state", **restart_storm.DEVICE_ENV, EDGE_MQTT_PORT=mosquitto.port)
    with restart_storm.watching(mosquitto.port) as watcher, running_edge(tmp_path, env) as (proc, _):
        endpoint = (tmp_path / "state" / "endpoint").read_text().strip()
        restart_storm.storm(watcher, endpoint)
        assert proc.poll() is None  # never restarted, never exited
        restart_storm.assert_refused_and_counted(watcher, endpoint)
