"""The link's small parts on their own: alert hysteresis, topics, client id, reconnect jitter,
the TCP proxy used by the partition tests."""

from __future__ import annotations

import random
import socket
import statistics

import pytest

from edge import config as configmod
from edge.mqtt.alerts import Alerts
from edge.mqtt.connection import BrokerConnection, ConnectionSettings, default_client_id
from edge.mqtt.link import MqttLink
from edge.mqtt.topics import Topics
from edge.assembly import all_sections
from edge.testing.ports import free_port
from edge.testing.tcp_proxy import TcpProxy
from edge.testing.waiting import wait_for


def alerts(**env) -> Alerts:
    config = configmod.build(all_sections([MqttLink]), {}, {f"EDGE_ALERTS_{k.upper()}": str(v) for k, v in env.items()},
                             "sim")
    return Alerts.from_config(config["alerts"])


def test_numeric_alerts_have_hysteresis():
    a = alerts()
    seq = [(70, "OFF"), (80, "ON"), (77, "ON"), (75.1, "ON"), (74.9, "OFF"), (79.9, "OFF"), (81, "ON")]
    for temp, expected in seq:
        assert a.evaluate({"cpu_temp_c": temp}, 0)["alert.cpu_temperature"]["problem"] == expected, temp
    out = a.evaluate({"disk_used_pct": 95, "memory_used_pct": 10}, 0)
    assert out["alert.disk"]["problem"] == "ON" and out["alert.memory"]["problem"] == "OFF"
    assert "alert.cpu_temperature" not in a.evaluate({}, 0)  # no reading: no claim either way


def test_under_voltage_clears_only_after_a_quiet_spell():
    a = alerts(under_voltage_clear_s=60)
    assert a.evaluate({"under_voltage": True}, 100)["alert.under_voltage"]["problem"] == "ON"
    assert a.evaluate({"under_voltage": False}, 130)["alert.under_voltage"]["problem"] == "ON"
    assert a.evaluate({"under_voltage": False}, 161)["alert.under_voltage"]["problem"] == "OFF"


def test_alert_levels_that_would_flap_are_a_config_problem():
    with pytest.raises(configmod.ConfigError, match=r"cpu_temp_c_clear \(85\) must be below cpu_temp_c"):
        alerts(cpu_temp_c_clear=85)


def test_topics():
    t = Topics("front-door", "ha")
    assert t.state("worker.system") == "edge/front-door/state/worker/system"
    assert t.event("doorbell.ring") == "edge/front-door/event/doorbell.ring"
    assert t.command_name("edge/front-door/cmd/restart_worker") == "restart_worker"
    assert t.command_name("edge/front-door/cmd/restart_worker/result") is None
    assert t.config("sensor", "cpu") == "ha/sensor/front-door/cpu/config"
    assert t.is_own_config("ha/sensor/front-door/cpu/config") and not t.is_own_config("ha/sensor/other/cpu/config")
    with pytest.raises(ValueError):
        t.worker_status("cmd")
    with pytest.raises(ValueError):
        Topics("front door")


def test_client_id_is_stable_and_unique_per_node_and_machine(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text("abc123\n")
    assert default_client_id("door", machine) == default_client_id("door", machine)
    assert default_client_id("door", machine) != default_client_id("garage", machine)
    other = tmp_path / "other-id"
    other.write_text("def456\n")
    assert default_client_id("door", machine) != default_client_id("door", other)
    assert default_client_id("door", machine).startswith("edge-door-")


class _NoHandler:
    def __getattr__(self, name):
        return lambda *a: None


def _delays(seed: int, n: int) -> list[float]:
    settings = ConnectionSettings(host="127.0.0.1", port=1, client_id=f"c{seed}", will_topic="edge/x/status",
                                  reconnect_min_s=1.0, reconnect_max_s=30.0)
    conn = BrokerConnection(settings, _NoHandler(), random.Random(seed))
    seen = []
    conn.client.reconnect_delay_set = lambda lo, hi: seen.append(lo)
    for _ in range(n):
        conn._on_connect_fail(conn.client, None)  # what paho calls before each retry
    return seen


def test_reconnect_delays_grow_with_jitter_so_a_fleet_does_not_retry_in_lockstep():
    one = _delays(1, 8)
    bases = [min(30.0, 2.0 ** i) for i in range(8)]
    assert all(0.2 * b <= d <= b for d, b in zip(one, bases))
    firsts = [_delays(seed, 1)[0] for seed in range(200)]  # 200 nodes lose the same broker
    assert statistics.pstdev(firsts) > 0.15 and max(firsts) - min(firsts) > 0.6


def test_tcp_proxy_pauses_without_closing_and_drops_on_request():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with TcpProxy(server.getsockname()[1]) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        far, _ = server.accept()
        far.settimeout(5)
        client.sendall(b"one")
        assert far.recv(16) == b"one"
        proxy.pause()
        client.sendall(b"two")
        far.settimeout(0.3)
        with pytest.raises(TimeoutError):
            far.recv(16)  # held, and neither side was closed
        proxy.resume()
        far.settimeout(5)
        assert far.recv(16) == b"two"
        proxy.drop_connections()
        wait_for(lambda: proxy.connections == 0, 5, message="connections dropped")
        with pytest.raises(ConnectionResetError):  # a reset, as when the far end's process dies
            far.recv(16)
        client.close()
        far.close()
    server.close()
    assert free_port()


def test_without_a_machine_id_the_client_id_comes_from_a_kept_random_seed(tmp_path):
    """Cloned SD cards may lack /etc/machine-id; two boards must still not share a client id
    (the broker would keep disconnecting one for the other)."""
    no_machine = tmp_path / "no-machine-id"
    first, second = tmp_path / "board-a", tmp_path / "board-b"
    first.mkdir()
    second.mkdir()
    a = default_client_id("door", no_machine, seed_path=first / "seed")
    assert a == default_client_id("door", no_machine, seed_path=first / "seed")  # stable across restarts
    assert a != default_client_id("door", no_machine, seed_path=second / "seed")
    assert a.startswith("edge-door-") and "nomachine" not in a
