"""`edge run --sim` with no broker configured starts an embedded one (amqtt) on 127.0.0.1,
says so, and talks to it like to any broker."""

from __future__ import annotations

import json
import signal

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
    assert f"embedded MQTT broker on 127.0.0.1:{port}" in output
    assert "mosquitto_sub" in output
