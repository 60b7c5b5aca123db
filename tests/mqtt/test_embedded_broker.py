"""`edge run --sim` with no broker configured starts its own on 127.0.0.1 (mosquitto when
installed, else amqtt), says so, talks to it like to any broker; and that broker filters
by topic, whichever it is."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

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


def test_two_devices_on_one_broker_each_keep_their_own_node_and_their_rings(tmp_path, mosquitto, recorders):
    """Two simulators on one machine used to call themselves by the host name with one MQTT
    client id and knock each other off the broker; the default node id now includes a hash
    of the machine and the state directory."""
    rec = recorders(mosquitto.port, "edge/+/status", "edge/+/event/doorbell.ring")
    devices = []
    for name in ("a", "b"):
        env = edge_env(tmp_path / name, EDGE_MQTT_ENABLED="true", EDGE_MQTT_HOST="127.0.0.1",
                       EDGE_MQTT_PORT=mosquitto.port, EDGE_DOORBELL_ENABLED="true", EDGE_FACES_ENABLED="false",
                       EDGE_CAMERA_BACKEND="none", EDGE_SYSTEM_ENABLED="false")
        (tmp_path / f"run-{name}").mkdir()
        devices.append((env, running_edge(tmp_path / f"run-{name}", env)))
    with devices[0][1], devices[1][1]:
        online = wait_for(lambda: (lambda nodes: nodes if len(nodes) == 2 else None)(
            {t.split("/")[1] for _, t, p, _ in rec.of() if t.endswith("/status") and p == b"online"}), 20,
            message="both devices online")
        for env, _ in devices:
            endpoint = (Path(env["EDGE_STATE_DIR"]) / "endpoint").read_text().strip()
            wait_for(lambda: press(endpoint), 10, message="a press the doorbell takes")
        wait_for(lambda: {t.split("/")[1] for _, t, _, _ in rec.of(prefix="edge/") if t.endswith("doorbell.ring")}
                 == online, 20, message="a ring from each device")
        assert all(rec.latest(f"edge/{node}/status") == b"online" for node in online)  # nobody knocked off


def press(endpoint: str) -> bool:
    request = urllib.request.Request(endpoint + "/sim/press", data=b"{}", method="POST")
    try:
        return json.loads(urllib.request.urlopen(request, timeout=5).read())["result"]["rang"]
    except urllib.error.HTTPError:
        return False  # still starting: asked again
