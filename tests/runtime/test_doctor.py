"""`edge doctor`: each failure names what is wrong and the fix, the exit status tells
scripts whether anything failed, and the broker check really connects."""

from __future__ import annotations

import json
import subprocess

from runtime_helpers import EDGE, edge_env

from edge.assembly import load_config
from edge.doctor import FAIL, OK, clock_synchronized
from edge.mqtt.doctor import broker_check
from edge.testing.ports import free_port
from edge.testing.waiting import scaled


def doctor(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([EDGE, "doctor", *args], env=env, capture_output=True, text=True, timeout=scaled(60))


def checks_by_name(result) -> dict[tuple[str, str], dict]:
    return {(c["component"], c["name"]): c for c in map(json.loads, result.stdout.splitlines())}


def test_doctor_reaches_the_configured_broker(tmp_path, mosquitto):
    env = edge_env(tmp_path / "state", EDGE_MQTT_ENABLED="true", EDGE_MQTT_HOST="127.0.0.1",
                   EDGE_MQTT_PORT=mosquitto.port)
    result = doctor(env, "--sim", "--json")
    broker = checks_by_name(result)[("mqtt", "broker")]
    assert broker["status"] == OK and f"mqtt://127.0.0.1:{mosquitto.port}" in broker["detail"]
    assert result.returncode == 0, result.stdout


def test_an_unreachable_broker_fails_the_doctor_with_the_fix(tmp_path):
    env = edge_env(tmp_path / "state", EDGE_MQTT_ENABLED="true", EDGE_MQTT_HOST="127.0.0.1",
                   EDGE_MQTT_PORT=free_port())  # nothing listens there
    result = doctor(env, "--sim")
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "mqtt broker" in line)
    assert line.startswith("FAIL") and "cannot connect to mqtt://127.0.0.1:" in line
    assert "fix: check [mqtt] host and port" in result.stdout


def test_an_invalid_config_fails_the_doctor_naming_the_key(tmp_path):
    bad = tmp_path / "edge.toml"
    bad.write_text("[supervisor]\nmax_restarts = \"five\"\n")
    result = doctor(edge_env(tmp_path / "state"), "--config", str(bad), "--json")
    assert result.returncode == 1
    failed = [c for c in map(json.loads, result.stdout.splitlines()) if c["status"] == FAIL]
    assert any(c["name"] == "config" and "[supervisor] max_restarts" in c["detail"] for c in failed)


def test_doctor_checks_only_enabled_workers(tmp_path):
    env = edge_env(tmp_path / "state")  # the doorbell and the MQTT link are off
    names = checks_by_name(doctor(env, "--sim", "--json"))
    assert ("runtime", "disk space") in names and ("runtime", "clock") in names
    assert not any(component in ("doorbell", "mqtt") for component, _ in names)


def test_broker_check_without_a_host_is_a_failure_on_a_device_but_not_in_the_simulator():
    device, _ = load_config(None, sim=False, environ={})
    simulator, _ = load_config(None, sim=True, environ={})
    assert broker_check(device).status == FAIL and "set [mqtt] host" in broker_check(device).fix
    assert broker_check(simulator).status == "skip"


def test_clock_sync_is_read_from_the_kernel():
    assert clock_synchronized() in (True, False)
