"""`edge run --sim` with no broker configured starts its own on 127.0.0.1 (mosquitto when
installed, else amqtt), says so, talks to it like to any broker; and that broker filters
by topic, whichever it is."""

from __future__ import annotations

import json
import signal

import paho.mqtt.client as mqtt

from edge.mqtt.sim_broker import MosquittoChild, start_sim_broker
from edge.testing.requirements import require_program
from edge.testing.ports import free_port
from edge.testing.waiting import wait_for
from mqtt.helpers import NODE
from runtime_helpers import edge_env, running_edge


def test_simulator_without_a_broker_starts_an_embedded_one_and_says_so(tmp_path, recorders):
    port = free_port()
    env = edge_env(tmp_path / "state", EDGE_MQTT_ENABLED="true", EDGE_MQTT_PORT=port, EDGE_NODE_ID=NODE,
                   EDGE_SYSTEM_ENABLED="false")
    with running_edge(tmp_path, env) as (proc, _):
        rec = recorders(port, f"edge/{NODE}/#", "homeassistant/#")
        rec.wait_latest(f"edge/{NODE}/status", b"online", timeout=20)
        wait_for(lambda: len(rec.of(prefix="homeassistant/")) >= 5, 10, message="discovery on the embedded broker")
        config = json.loads(rec.of(prefix="homeassistant/")[0][2])
        assert config["availability"][0]["topic"] == f"edge/{NODE}/status"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        output = proc.stdout.read().decode()
    assert f"MQTT broker (mosquitto) on 127.0.0.1:{port}" in output  # mosquitto is installed here
    assert "mosquitto_sub -h 127.0.0.1 -p" in output and "-T 'edge/+/event/doorbell.snapshot'" in output


def test_the_simulators_broker_delivers_only_the_retained_messages_a_filter_asks_for(recorders):
    """amqtt 0.12 handed every retained message to every subscriber; the simulator runs
    mosquitto where it is installed, and that one must filter."""
    require_program("mosquitto")
    broker = start_sim_broker(free_port())
    try:
        assert isinstance(broker, MosquittoChild)
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher")
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        for topic in ("edge/node/state/a", "homeassistant/sensor/node/a/config"):
            publisher.publish(topic, b"x", qos=1, retain=True).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()
        nothing = recorders(broker.port, "nothing/here", client_id="nothing")
        edge = recorders(broker.port, "edge/#", client_id="edge")
        edge.wait_latest("edge/node/state/a", b"x")  # retained messages arrive on subscribe...
        assert [m[1] for m in edge.of()] == ["edge/node/state/a"]  # ... only those the filter asks for
        assert nothing.of() == []
    finally:
        broker.stop()
