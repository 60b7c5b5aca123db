"""Restarts asked for by a command (Home Assistant's buttons, or anyone who can publish to the
broker) can never take the bell down: they are no crashes, are rate-limited, and the button
path is not restarted on request at all."""

from __future__ import annotations

import functools
import json
import urllib.request

import paho.mqtt.client as mqtt
import pytest
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
    are answered and counted."""
    env = edge_env(tmp_path / "state", EDGE_DOORBELL_ENABLED="true", EDGE_FACES_ENABLED="false",
                   EDGE_DOORBELL_COOLDOWN_S="0", EDGE_DOORBELL_BOUNCE_S="0", EDGE_MQTT_ENABLED="true", EDGE_MQTT_HOST="127.0.0.1",
                   EDGE_MQTT_PORT=mosquitto.port, EDGE_NODE_ID="storm")
    replies, rings, status = [], [], []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-storm")

    def on_message(client, userdata, msg):
        if msg.topic == "edge/storm/status":
            status.append(msg.payload)
        else:
            (rings if msg.topic.endswith("/event/doorbell.ring") else replies).append(json.loads(msg.payload))

    client.on_message = on_message
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe([("edge/storm/cmd/+/result", 1), ("edge/storm/event/doorbell.ring", 1),
                      ("edge/storm/status", 1)])
    client.loop_start()
    try:
        with running_edge(tmp_path, env) as (proc, _):
            endpoint = (tmp_path / "state" / "endpoint").read_text().strip()
            wait_for(lambda: status[-1:] == [b"online"], 20, message="the device online on the broker")

            def probe_answered() -> bool:  # the link subscribes to commands just after "online"
                client.publish("edge/storm/cmd/restart_worker", b'{"worker": "nobody"}', qos=1)
                return wait_for(lambda: replies, 1, message="a probe's answer") if not replies else True
            wait_for(_quietly(probe_answered), 10, message="the device to answer commands")
            replies.clear()
            pressed = []
            for n in range(30):
                name, payload = (("restart_runtime", {}), ("restart_worker", {"worker": "doorbell"}),
                                 ("restart_worker", {"worker": "system"}))[n % 3]
                client.publish(f"edge/storm/cmd/{name}", json.dumps(payload), qos=1).wait_for_publish(5)
                wait_for(lambda n=n: len(replies) > n, 10, message=f"the answer to command {n + 1}")
                press = wait_for(lambda: _sim(endpoint, "press", {"hold": 0.05}), 10,
                                 message="a press the doorbell takes")
                assert press["rang"], press
                pressed.append(press["event_id"])
                wait_for(lambda: _sim(endpoint, "status", {})["gpio"]["button"] is False, 5,
                         message="the button let go (the next press is a new one)")
            wait_for(lambda: {r["event_id"] for r in rings} >= set(pressed), 20,
                     message="every ring at the broker")
            assert proc.poll() is None  # never restarted, never exited
            codes = [r.get("code", "ok") for r in replies]
            assert codes.count("rate_limited") == 10 + 10 - 3  # runtime: too early; system: 3 allowed
            assert codes.count("unauthorized") == 10  # the doorbell: never on request
            assert codes.count("ok") == 3
            metrics = urllib.request.urlopen(endpoint + "/metrics", timeout=5).read().decode()
            assert 'edge_mqtt_commands_rejected_total{code="rate_limited"} 17.0' in metrics
            assert 'edge_mqtt_commands_rejected_total{code="unauthorized"} 10.0' in metrics
    finally:
        client.loop_stop()
        client.disconnect()


def _sim(endpoint: str, command: str, args: dict):
    request = urllib.request.Request(endpoint + f"/sim/{command}", data=json.dumps(args).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())["result"]
    except urllib.error.HTTPError:
        return None  # "still starting": the wait tries again


def _quietly(condition):
    """`condition`, with a timeout inside it counting as not yet."""
    def check():
        try:
            return condition()
        except AssertionError:
            return False
    return check
