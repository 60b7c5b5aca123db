"""The link against a real mosquitto: availability, states, events, HA's birth message, a
missing broker. The runtime runs in this process with its real store and supervisor."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
from prometheus_client import generate_latest

from edge.entities import Entity
from edge.mqtt.link import MqttLink
from edge.testing.ports import free_port
from edge.testing.tcp_proxy import TcpProxy
from edge.testing.waiting import wait_for
from edge.worker import TEMPORARY, Worker
from mqtt.helpers import NODE, link_of, running_runtime, wait_connected, wait_outbox_empty

BASE = f"edge/{NODE}"


class Fragile(Worker):
    """Runs until told to crash; never restarted (temporary), so it stays FAILED."""

    name = "fragile"
    restart = TEMPORARY
    crash = threading.Event()
    entities = (Entity("sensor", "fragile_value", "Value", state="fragile.value"),
                Entity("image", "fragile_picture", "Picture", event="fragile.picture",
                       options={"content_type": "image/jpeg"}))

    def run(self, ctx):
        while not ctx.sleep(0.05):
            if self.crash.is_set():
                raise RuntimeError("printer cable pulled")


def test_online_first_then_discovery_then_states_and_worker_availability(tmp_path, mosquitto, recorders):
    Fragile.crash.clear()
    rec = recorders(mosquitto.port, f"{BASE}/#", "homeassistant/#")
    with running_runtime(tmp_path / "state", mosquitto.port, classes=(Fragile, MqttLink)) as rt:
        link = wait_connected(rt)
        rec.wait_latest(f"{BASE}/status", b"online")
        rec.wait_latest(f"{BASE}/fragile/status", b"online")
        wait_for(lambda: rec.of(f"{BASE}/state/node"), 10, message="node state")
        order = [t for _, t, _, _ in rec.of()]
        first_config = min(i for i, t in enumerate(order) if t.startswith("homeassistant/"))
        first_state = min(i for i, t in enumerate(order) if t.startswith(f"{BASE}/state/"))
        assert order.index(f"{BASE}/status") < first_config < first_state
        assert json.loads(rec.latest(f"{BASE}/state/node"))["version"] == link.discovery.node.version
        assert not [t for t in order if t.startswith("homeassistant/update/")]  # nothing to install yet

        rt.states.set("fragile.value", 42)
        rec.wait_latest(f"{BASE}/state/fragile/value", b"42")

        # A crashed worker greys out its own entities only; its problem sensor (the node's) says why.
        Fragile.crash.set()
        rec.wait_latest(f"{BASE}/fragile/status", b"offline")
        wait_for(lambda: json.loads(rec.latest(f"{BASE}/state/worker/fragile") or b"{}").get("problem") == "ON", 10,
                 message="the fragile worker's problem sensor to turn on")
        report = json.loads(rec.latest(f"{BASE}/state/worker/fragile"))
        assert report["state"] == "FAILED" and "printer cable pulled" in report["reason"]
        assert rec.latest(f"{BASE}/status") == b"online"
        assert rec.latest(f"{BASE}/mqtt/status") == b"online"
    # A clean stop says goodbye (retained), instead of leaving it to the Last Will.
    rec.wait_latest(f"{BASE}/status", b"offline")


def test_the_link_sends_each_packet_at_once_without_nagle(tmp_path, mosquitto):
    """With Nagle's algorithm on, a ring published right after a QoS 0 state waited for the
    broker's delayed ACK (40 ms: bench_doorbell's press-to-ring p50 was 44 ms)."""
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        link = wait_connected(rt)
        assert link.conn.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_events_go_out_in_order_not_retained_and_pictures_as_raw_bytes(tmp_path, mosquitto, recorders):
    Fragile.crash.clear()
    rec = recorders(mosquitto.port, f"{BASE}/event/#")
    with running_runtime(tmp_path / "state", mosquitto.port, classes=(Fragile, MqttLink)) as rt:
        wait_connected(rt)
        ids = [rt.bus.emit("doorbell.ring", {"n": i, "event_type": "ring"}).event_id for i in range(50)]
        rt.bus.emit("internal.tick", {})  # internal events stay inside
        rt.bus.emit("fragile.picture", {"jpeg": b"\xff\xd8\xff\xe0fake-jpeg", "file": "x.jpg"})
        wait_for(lambda: len(rec.of(f"{BASE}/event/doorbell.ring")) == 50, 10, message="50 rings")
        got = [json.loads(p) for _, _, p, _ in rec.of(f"{BASE}/event/doorbell.ring")]
        assert [g["event_id"] for g in got] == ids
        assert got[0]["event_type"] == "ring" and got[0]["kind"] == "doorbell.ring" and got[0]["data"]["n"] == 0
        wait_for(lambda: rec.latest(f"{BASE}/event/fragile.picture") == b"\xff\xd8\xff\xe0fake-jpeg", 10,
                 message="the picture, as raw bytes")
        wait_outbox_empty(rt)
        assert not rec.of(f"{BASE}/event/internal.tick")
    late = recorders(mosquitto.port, f"{BASE}/event/#", "probe")  # a retained event would ring again here
    late.client.publish("probe", b"x", qos=1)
    wait_for(lambda: late.of("probe"), 10, message="a round trip after subscribing")
    assert not late.of(prefix=f"{BASE}/event/")


def test_home_assistant_birth_republishes_discovery_and_states_once_after_the_delay(tmp_path, mosquitto,
                                                                                    recorders):
    rec = recorders(mosquitto.port, "homeassistant/+/+/+/config", f"{BASE}/state/#")
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        link = wait_connected(rt)
        wait_for(lambda: all(rec.of(t) for t in link.configs), 10, message="discovery")
        wait_for(lambda: rec.of(f"{BASE}/state/node"), 10, message="states")
        states_before = len(rec.of(f"{BASE}/state/node"))
        ha = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="home-assistant")
        ha.connect("127.0.0.1", mosquitto.port)
        ha.loop_start()
        try:
            born = time.monotonic()
            ha.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
            ha.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)  # folds into the first
            wait_for(lambda: all(len(rec.of(t)) == 2 for t in link.configs), 10, message="discovery re-published")
            wait_for(lambda: len(rec.of(f"{BASE}/state/node")) > states_before, 10, message="states re-published")
            resent = [rec.of(t)[1][0] for t in link.configs]
            # [mqtt] birth_delay_min_s = 0.5 and birth_delay_max_s = 0.8 in these tests; the
            # upper bound has a second of slack for a loaded machine.
            assert min(resent) - born >= 0.5 and max(resent) - born <= 0.8 + 1.0
            # Once: a later state change goes out alone, and no config came a third time.
            rt.states.set("probe", "after")
            rec.wait_latest(f"{BASE}/state/probe", b"after")
            assert all(len(rec.of(t)) == 2 for t in link.configs)
            assert link.counters.values["discovery_published"] == 2 * len(link.configs)
        finally:
            ha.disconnect()
            ha.loop_stop()


def test_a_retained_birth_replayed_on_subscribe_does_not_trigger_a_second_announcement(tmp_path, mosquitto,
                                                                                      recorders):
    """Some setups retain homeassistant/status; the broker then replays "online" on every
    subscribe, which is no restart of Home Assistant."""
    ha = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="home-assistant")
    ha.connect("127.0.0.1", mosquitto.port)
    ha.loop_start()
    try:
        ha.publish("homeassistant/status", b"online", qos=1, retain=True).wait_for_publish(5)
        rec = recorders(mosquitto.port, f"{BASE}/cmd/#")
        with running_runtime(tmp_path / "state", mosquitto.port) as rt:
            link = wait_connected(rt)
            # The retained birth arrives right after the SUBACK, before this command: once the
            # reply is back, the link has seen it.
            ha.publish(f"{BASE}/cmd/probe", b"{}", qos=1).wait_for_publish(5)
            wait_for(lambda: rec.of(f"{BASE}/cmd/probe/result"), 10, message="the probe's reply")
            with link._lock:
                assert link._birth_due is None
            assert link.counters.values["discovery_published"] == len(link.configs)
    finally:
        ha.publish("homeassistant/status", b"", qos=1, retain=True).wait_for_publish(5)
        ha.disconnect()
        ha.loop_stop()


def test_no_broker_degrades_the_link_without_crashing_it_and_events_wait(tmp_path, mosquitto, recorders):
    Fragile.crash.clear()
    rec = recorders(mosquitto.port, f"{BASE}/event/#")
    gate = free_port()  # nothing listens here until the test opens a proxy to the broker on it
    with running_runtime(tmp_path / "state", gate, classes=(Fragile, MqttLink)) as rt:
        runner = rt.supervisor.runner("mqtt")
        wait_for(lambda: rt.breakers.get("mqtt").state == "open", 10, message="the mqtt breaker to open")
        ids = [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(30)]
        rt.bus.emit("fragile.picture", {"jpeg": b"older face"})
        rt.bus.emit("fragile.picture", {"jpeg": b"newest face"})
        # An event with a coalescing key replaces its unsent predecessor instead of queueing.
        levels = [rt.bus.emit("tank.level", {"coalesce_key": "tank", "pct": pct}).event_id for pct in (90, 80, 70)]
        wait_for(lambda: link_of(rt).outbox.counts()["pending"] == 31, 10, message="events in the outbox")
        assert "edge_mqtt_outbox_coalesced_total 2.0" in generate_latest(rt.metrics).decode()
        rt.supervisor.tick()
        # The link restates its reason on its own loop: the count reaches it a moment later.
        wait_for(lambda: "31 events" in rt.health.get("worker.mqtt").reason, 10, message="the count in the reason")
        health = rt.health.get("worker.mqtt")
        assert health.state == "DEGRADED" and "unreachable" in health.reason and "31 events" in health.reason
        assert runner.restarts == 0 and runner.crashes == 0
        assert rt.health.get("breaker.mqtt").state == "DEGRADED"
        # What Home Assistant's "Events waiting" sensor shows once the broker is back (the
        # link reports every few seconds).
        wait_for(lambda: rt.states.get("mqtt.events_waiting") == 31, 10, message="31 events waiting")
        with TcpProxy(mosquitto.port, port=gate):  # the broker is back
            wait_outbox_empty(rt)
            wait_for(lambda: len(rec.of(f"{BASE}/event/visitor.seen")) == 30, 10, message="the waiting events")
            assert [json.loads(p)["event_id"] for _, _, p, _ in rec.of(f"{BASE}/event/visitor.seen")] == ids
            wait_for(lambda: rec.of(f"{BASE}/event/tank.level"), 10, message="the newest tank level")
            assert [json.loads(p)["event_id"] for _, _, p, _ in rec.of(f"{BASE}/event/tank.level")] == levels[-1:]
            # Pictures waited in memory, never in the outbox on disk: only the newest one goes.
            wait_for(lambda: rec.of(f"{BASE}/event/fragile.picture"), 10, message="the picture")
            assert [p for _, _, p, _ in rec.of(f"{BASE}/event/fragile.picture")] == [b"newest face"]
            assert rt.breakers.get("mqtt").state == "closed"
            wait_for(lambda: rt.states.get("mqtt.events_waiting") == 0, 10, message="nothing waiting")


def test_mqtt5_protocol_delivers_events_and_answers_on_the_response_topic(tmp_path, mosquitto, recorders):
    rec = recorders(mosquitto.port, f"{BASE}/#")
    with running_runtime(tmp_path / "state", mosquitto.port, env={"EDGE_MQTT_PROTOCOL": "5"}) as rt:
        wait_connected(rt)
        rec.wait_latest(f"{BASE}/status", b"online")
        ids = [rt.bus.emit("door.opened", {"n": i}).event_id for i in range(40)]
        wait_for(lambda: len(rec.of(f"{BASE}/event/door.opened")) == 40, 10, message="40 events over MQTT 5")
        assert [json.loads(p)["event_id"] for _, _, p, _ in rec.of(f"{BASE}/event/door.opened")] == ids

        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        replies = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-v5", protocol=mqtt.MQTTv5)
        client.on_message = lambda c, u, m: replies.append((m.topic, m.payload,
                                                            getattr(m.properties, "CorrelationData", None)))
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        try:
            client.subscribe("ha/replies", qos=1)[0]
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "ha/replies"
            props.CorrelationData = b"req-7"
            client.publish(f"{BASE}/cmd/no_such_command", b"{}", qos=1, properties=props)
            wait_for(lambda: replies, 10, message="a reply on the response topic")
            topic, payload, correlation = replies[0]
            assert topic == "ha/replies" and correlation == b"req-7"
            assert json.loads(payload)["code"] == "unknown"
        finally:
            client.disconnect()
            client.loop_stop()


def test_alerts_follow_the_system_readings_with_hysteresis(tmp_path, mosquitto, recorders):
    rec = recorders(mosquitto.port, f"{BASE}/state/alert/#")
    topic = f"{BASE}/state/alert/cpu_temperature"

    def alert():
        return json.loads(rec.latest(topic) or b"{}")
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        wait_connected(rt)
        for temp, expected in ((85.0, "ON"), (77.0, "ON"), (70.0, "OFF")):
            rt.states.set("system", {"cpu_temp_c": temp, "disk_used_pct": 40.0})
            wait_for(lambda: alert().get("value") == temp, 10, message=f"the alert at {temp} °C")
            assert alert()["problem"] == expected
        assert json.loads(rec.latest(f"{BASE}/state/alert/disk"))["problem"] == "OFF"


def test_a_link_restart_loses_no_events(tmp_path, mosquitto, recorders):
    """Home Assistant's "Restart MQTT" button: the link stops and comes back; events raised
    meanwhile wait in its bus queue, which outlives the restart."""
    rec = recorders(mosquitto.port, f"{BASE}/event/#")
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        wait_connected(rt)
        runner = rt.supervisor.runner("mqtt")
        ids = [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(100)]
        rt.supervisor.restart("mqtt")
        ids += [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(100, 200)]
        wait_for(lambda: runner.restarts == 1, 10, message="the link to restart")
        ids += [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(200, 300)]
        wait_for(lambda: set(ids) <= {json.loads(p)["event_id"] for _, _, p, _ in rec.of()}, 20,
                 message="every event across the restart")
        arrived = [json.loads(p)["event_id"] for _, _, p, _ in rec.of()]
        assert list(dict.fromkeys(arrived)) == ids
        assert runner.crashes == 0


def test_a_link_restart_keeps_the_events_that_only_memory_holds(tmp_path, mosquitto, recorders):
    """No store (a state directory that cannot be made) and no broker: the outbox's memory
    holds the only copy of the unsent events, and a link restart must not take it along."""
    rec = recorders(mosquitto.port, f"{BASE}/event/#")
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    gate = free_port()  # nothing listens here until the test opens a proxy to the broker on it
    with running_runtime(not_a_directory / "state", gate) as rt:
        assert rt.store is None
        runner = rt.supervisor.runner("mqtt")
        wait_for(lambda: rt.breakers.get("mqtt").state == "open", 10, message="the mqtt breaker to open")
        ids = [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(20)]
        for pct in (90, 80, 70):
            rt.bus.emit("tank.level", {"coalesce_key": "tank", "pct": pct})
        wait_for(lambda: link_of(rt).outbox.counts()["pending"] == 21, 10, message="events in the outbox")
        rt.supervisor.restart("mqtt")
        wait_for(lambda: runner.restarts == 1 and link_of(rt).outbox is not None, 10, message="the link to restart")
        ids += [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(20, 30)]
        # Counted once, although two runs of the link have seen the same outbox.
        assert "edge_mqtt_outbox_coalesced_total 2.0" in generate_latest(rt.metrics).decode()
        with TcpProxy(mosquitto.port, port=gate):  # the broker is back
            wait_for(lambda: len(rec.of(f"{BASE}/event/visitor.seen")) >= 30, 20, message="every waiting event")
            arrived = [json.loads(p)["event_id"] for _, _, p, _ in rec.of(f"{BASE}/event/visitor.seen")]
            assert list(dict.fromkeys(arrived)) == ids
            assert runner.crashes == 0


def test_the_link_reconnects_after_a_broker_restart_while_2000_idle_connections_hold_the_health_port(tmp_path,
                                                                                                   mosquitto):
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        wait_connected(rt)
        idle = [socket.create_connection(("127.0.0.1", rt.server.port), timeout=5) for _ in range(2000)]
        try:
            mosquitto.stop()
            wait_for(lambda: not link_of(rt).connected, 10, message="the link to notice the broker is gone")
            mosquitto.start()
            wait_connected(rt, timeout=20)
            with urllib.request.urlopen(f"http://127.0.0.1:{rt.server.port}/health", timeout=5) as answer:
                assert answer.status == 200
        finally:
            for conn in idle:
                conn.close()
