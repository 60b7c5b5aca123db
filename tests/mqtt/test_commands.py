"""Commands from Home Assistant: every bad one is rejected with a reason, counted and
answered; dangerous ones are refused unless enabled; nothing a command does stops the
runtime."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
from prometheus_client import generate_latest

from edge.commands import MAX_PAYLOAD, Command, CommandRegistry
from edge.mqtt.link import MqttLink
from edge.mqtt.remote_commands import MAX_QUEUED, RemoteCommands
from edge.mqtt.topics import Topics
from edge.testing.waiting import wait_for
from edge.worker import Worker
from mqtt.helpers import NODE, running_runtime, wait_connected, wait_outbox_empty

BASE = f"edge/{NODE}"


class DoorStub(Worker):
    """Registers a door-opening command (dangerous) and one that raises; restartable."""

    name = "door"
    opened = threading.Event()

    def run(self, ctx):
        self._stop = threading.Event()
        ctx.commands.register(Command("open_door", lambda p, via: self.opened.set() or {"opened": True}, {},
                                      dangerous=True))
        ctx.commands.register(Command("explode", lambda p, via: 1 / 0, {}))
        while not ctx.sleep(0.05):
            if self._stop.is_set():
                return  # interrupted: return, and the supervisor starts a fresh one

    def interrupt(self):
        self._stop.set()


def send(port: int, name: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{name[:20]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(f"{BASE}/cmd/{name}", payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def reply(rec, name: str, n: int = 1) -> dict:
    wait_for(lambda: len(rec.of(f"{BASE}/cmd/{name}/result")) >= n, 10, message=f"a reply to {name}")
    return json.loads(rec.of(f"{BASE}/cmd/{name}/result")[n - 1][2])


def test_bad_commands_are_rejected_counted_and_answered_and_the_runtime_keeps_working(tmp_path, mosquitto,
                                                                                      recorders):
    DoorStub.opened.clear()
    rec = recorders(mosquitto.port, f"{BASE}/cmd/#", f"{BASE}/event/#")
    with running_runtime(tmp_path / "state", mosquitto.port, classes=(DoorStub, MqttLink)) as rt:
        wait_connected(rt)
        port = mosquitto.port
        send(port, "restart_worker", b"{not json")
        assert reply(rec, "restart_worker") == {"command": "restart_worker", "ok": False, "code": "malformed",
                                                "error": reply(rec, "restart_worker")["error"]}
        send(port, "restart_worker", json.dumps({"worker": "x" * MAX_PAYLOAD}).encode())
        assert reply(rec, "restart_worker", 2)["code"] == "oversized"
        send(port, "restart_worker", b'{"worker": 5}')
        assert reply(rec, "restart_worker", 3)["code"] == "invalid"
        send(port, "restart_worker", b'{"worker": "nobody"}')
        assert "no running worker 'nobody'" in reply(rec, "restart_worker", 4)["error"]
        send(port, "launch_rockets", b"{}")
        assert reply(rec, "launch_rockets")["code"] == "unknown"
        send(port, "open_door", b"{}")
        refused = reply(rec, "open_door")
        assert refused["code"] == "unauthorized" and "allow_dangerous_commands" in refused["error"]
        assert not DoorStub.opened.is_set()
        send(port, "explode", b"{}")
        assert reply(rec, "explode")["code"] == "failed"
        send(port, "restart_worker", bytes(range(256)))  # binary garbage
        assert reply(rec, "restart_worker", 5)["code"] == "malformed"

        registry = rt.commands
        assert dict(registry.rejected) == {"malformed": 2, "oversized": 1, "invalid": 2, "unknown": 1,
                                           "unauthorized": 1, "failed": 1}
        metrics = generate_latest(rt.metrics).decode()
        assert 'edge_mqtt_commands_rejected_total{code="malformed"} 2.0' in metrics
        assert 'edge_mqtt_commands_rejected_total{code="unauthorized"} 1.0' in metrics

        # Still working: a good command runs, the link is up, events flow.
        runner = rt.supervisor.runner("door")
        send(port, "restart_worker", b'{"worker": "door"}')
        assert reply(rec, "restart_worker", 6) == {"command": "restart_worker", "ok": True,
                                                   "result": {"restarting": "door"}}
        wait_for(lambda: runner.restarts == 1, 10, message="the door worker to restart")
        event = rt.bus.emit("doorbell.ring", {"event_type": "ring"})
        wait_for(lambda: rec.of(f"{BASE}/event/doorbell.ring"), 10, message="an event after the bad commands")
        assert json.loads(rec.of(f"{BASE}/event/doorbell.ring")[0][2])["event_id"] == event.event_id
        assert rt.supervisor.runner("mqtt").crashes == 0 and rt.supervisor.runner("mqtt").restarts == 0
        wait_outbox_empty(rt)


def test_dangerous_commands_run_only_when_enabled_in_config(tmp_path, mosquitto, recorders):
    DoorStub.opened.clear()
    rec = recorders(mosquitto.port, f"{BASE}/cmd/#")
    with running_runtime(tmp_path / "state", mosquitto.port, classes=(DoorStub, MqttLink),
                         env={"EDGE_MQTT_ALLOW_DANGEROUS_COMMANDS": "true"}) as rt:
        wait_connected(rt)
        wait_for(lambda: "open_door" in rt.commands.names(), 10, message="the command registered")
        send(mosquitto.port, "open_door", b"{}")
        assert reply(rec, "open_door") == {"command": "open_door", "ok": True, "result": {"opened": True}}
        assert DoorStub.opened.is_set()


def test_a_flood_is_refused_as_busy_and_every_refusal_is_answered():
    """paho's thread queues at most MAX_QUEUED commands; the rest are refused there (counted)
    and still get a reply, and an oversized payload is refused without being copied."""
    registry = CommandRegistry()
    ran = []
    registry.register(Command("ping", lambda p, via: ran.append(p) or "pong", {}))
    remote = RemoteCommands(registry, Topics(NODE), allow_dangerous=False)
    offered = [remote.offer("ping", b"{}", None) for _ in range(MAX_QUEUED + 5)]
    assert offered == [True] * MAX_QUEUED + [False] * 5
    assert remote.offer("ping", b"x" * (MAX_PAYLOAD + 1), None) is False
    replies = []
    assert remote.run_pending(lambda topic, body, props: replies.append((topic, json.loads(body)))) == MAX_QUEUED + 6
    codes = [r["code"] if not r["ok"] else "ok" for _, r in replies]
    assert sorted(codes) == sorted(["ok"] * MAX_QUEUED + ["busy"] * 5 + ["oversized"])
    assert {topic for topic, _ in replies} == {f"{BASE}/cmd/ping/result"}
    assert len(ran) == MAX_QUEUED
    assert registry.rejected == {"busy": 5, "oversized": 1}
