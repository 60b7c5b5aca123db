"""A press on the mock button reaches a subscriber on a real mosquitto broker as a `ring`
event, the visitor follows with the same event_id, and a broker that is down delays the
announcement without touching the chime: the whole runtime, doorbell and MQTT link."""

from __future__ import annotations

import json
import queue

import paho.mqtt.client as mqtt
import pytest

from edge.testing.waiting import wait_for
from services.doorbell.testing import doorbells
from services.doorbell.worker import DoorbellWorker


NODE = "front-door"


class Subscriber:
    """A paho client collecting every message under edge/<node>/event/."""

    def __init__(self, port: int):
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"edge/{NODE}/event/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait_raw(self, kind: str, timeout: float = 15.0) -> bytes:
        topic = f"edge/{NODE}/event/{kind}"
        while True:
            got_topic, payload = self.messages.get(timeout=timeout)
            if got_topic == topic:
                return payload

    def wait(self, kind: str, timeout: float = 15.0) -> dict:
        return json.loads(self.wait_raw(kind, timeout))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber(mosquitto):
    sub = Subscriber(mosquitto.port)
    wait_for(lambda: sub.client.is_connected(), timeout=10, message="the subscriber")
    yield sub
    sub.close()


@pytest.fixture
def make_bell(tmp_path):
    with doorbells(tmp_path) as make:
        yield make


def config(port: int) -> dict:
    return {"node": {"id": NODE}, "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.05,
                                           "reconnect_max_s": 0.5},
            "doorbell": {"cooldown_s": 0}, "faces": {"enabled": False}}


def test_press_reaches_a_broker_subscriber_as_ring_then_visitor_with_the_same_event_id(
        make_bell, mosquitto, subscriber):
    bell = make_bell(config(mosquitto.port), classes=(DoorbellWorker, link.MqttLink))
    wait_for(lambda: bell.runtime.supervisor.runner("mqtt").worker.connected, timeout=15,
             message="the MQTT link to connect")
    bell.press()
    assert bell.chime.state is True
    ring = subscriber.wait("doorbell.ring")
    assert ring["event_type"] == "ring"
    assert ring["event_id"] == bell.events("doorbell.ring")[0].event_id
    visitor = subscriber.wait("doorbell.visitor")
    assert visitor["event_id"] == ring["event_id"]
    assert visitor["data"]["frames"] == 3
    assert subscriber.wait_raw("doorbell.snapshot")[:2] == b"\xff\xd8"  # the image entity's JPEG


def test_broker_down_leaves_the_chime_alone_and_the_ring_is_delivered_when_it_is_back(
        make_bell, mosquitto, subscriber):
    bell = make_bell(config(mosquitto.port), classes=(DoorbellWorker, link.MqttLink))
    mqtt_link = bell.runtime.supervisor.runner("mqtt").worker
    wait_for(lambda: mqtt_link.connected, timeout=15, message="the MQTT link to connect")
    subscriber.close()
    mosquitto.stop()
    wait_for(lambda: not mqtt_link.connected, timeout=15, message="the link to notice the broker is gone")
    bell.press()
    assert bell.chime.state is True  # the chime never depends on the network
    ring_id = bell.events("doorbell.ring")[0].event_id
    mosquitto.start()
    subscriber.__init__(mosquitto.port)
    ring = subscriber.wait("doorbell.ring", timeout=30)
    assert ring["event_id"] == ring_id
