"""A storm of restart commands over a real broker, with a press after each: shared by the
runtime test (a plain `edge run --sim` process) and the systemd test (the real unit under
systemd-nspawn), which assert the same answers (issue 9 item 1)."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Iterator

import paho.mqtt.client as mqtt

from edge.testing.waiting import wait_for

NODE = "storm"
# The device under the storm: the doorbell with no camera work and no cooldown, on the
# test's broker. Environment variables, for a process or a unit's drop-in.
DEVICE_ENV = {"EDGE_DOORBELL_ENABLED": "true", "EDGE_FACES_ENABLED": "false", "EDGE_DOORBELL_COOLDOWN_S": "0",
              "EDGE_DOORBELL_BOUNCE_S": "0", "EDGE_MQTT_ENABLED": "true", "EDGE_MQTT_HOST": "127.0.0.1",
              "EDGE_NODE_ID": NODE}
COMMANDS = (("restart_runtime", {}), ("restart_worker", {"worker": "doorbell"}),
            ("restart_worker", {"worker": "system"}))


class StormWatcher:
    """Home Assistant's side: command answers, rings and the device's status, as received."""

    def __init__(self, client: mqtt.Client):
        self.client = client
        self.replies: list[dict] = []
        self.rings: list[dict] = []
        self.status: list[bytes] = []

    def on_message(self, client, userdata, msg) -> None:
        if msg.topic == f"edge/{NODE}/status":
            self.status.append(msg.payload)
        elif msg.topic.endswith("/event/doorbell.ring"):
            self.rings.append(json.loads(msg.payload))
        else:
            self.replies.append(json.loads(msg.payload))


@contextlib.contextmanager
def watching(broker_port: int) -> Iterator[StormWatcher]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-storm")
    watcher = StormWatcher(client)
    client.on_message = watcher.on_message
    client.connect("127.0.0.1", broker_port)
    client.subscribe([(f"edge/{NODE}/cmd/+/result", 1), (f"edge/{NODE}/event/doorbell.ring", 1),
                      (f"edge/{NODE}/status", 1)])
    client.loop_start()
    try:
        yield watcher
    finally:
        client.loop_stop()
        client.disconnect()


def storm(watcher: StormWatcher, endpoint: str, commands: int = 30) -> list[str]:
    """Send `commands` restart commands (the three kinds in turn), each answered, with a
    press that must ring after each; returns the presses' event ids."""
    wait_for(lambda: watcher.status[-1:] == [b"online"], 30, message="the device online on the broker")

    def probe_answered() -> bool:  # the link subscribes to commands just after "online"
        watcher.client.publish(f"edge/{NODE}/cmd/restart_worker", b'{"worker": "nobody"}', qos=1)
        return wait_for(lambda: watcher.replies, 1, message="a probe's answer") if not watcher.replies else True
    wait_for(_quietly(probe_answered), 10, message="the device to answer commands")
    watcher.replies.clear()
    pressed = []
    for n in range(commands):
        name, payload = COMMANDS[n % len(COMMANDS)]
        watcher.client.publish(f"edge/{NODE}/cmd/{name}", json.dumps(payload), qos=1).wait_for_publish(5)
        wait_for(lambda n=n: len(watcher.replies) > n, 10, message=f"the answer to command {n + 1}")
        press = wait_for(lambda: sim(endpoint, "press", {"hold": 0.05}), 10, message="a press the doorbell takes")
        assert press["rang"], press
        pressed.append(press["event_id"])
        wait_for(lambda: sim(endpoint, "status", {})["gpio"]["button"] is False, 5,
                 message="the button let go (the next press is a new one)")
    wait_for(lambda: {r["event_id"] for r in watcher.rings} >= set(pressed), 20, message="every ring at the broker")
    return pressed


def assert_refused_and_counted(watcher: StormWatcher, endpoint: str) -> None:
    """30 commands: the 10 runtime restarts come too early (rate-limited), the doorbell is
    never restarted on request, the system worker 3 times out of 10."""
    codes = [r.get("code", "ok") for r in watcher.replies]
    assert codes.count("rate_limited") == 10 + 10 - 3
    assert codes.count("unauthorized") == 10
    assert codes.count("ok") == 3
    metrics = urllib.request.urlopen(endpoint + "/metrics", timeout=5).read().decode()
    assert 'edge_mqtt_commands_rejected_total{code="rate_limited"} 17.0' in metrics
    assert 'edge_mqtt_commands_rejected_total{code="unauthorized"} 10.0' in metrics


def sim(endpoint: str, command: str, args: dict):
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
