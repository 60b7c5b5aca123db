"""`edge sip call TARGET` against a real kamailio and a baresip house phone, and `edge sip
status` reading what the device recorded."""

from __future__ import annotations

import os
import subprocess
import sys

from edge.testing.waiting import wait_for
from sip.conftest import DOOR_PASSWORD, sip_config


def edge(*args, env):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def device_env(tmp_path, kamailio, node: str | None = None, **sip):
    sip = {**sip_config(kamailio, **sip)["sip"], "audio_source": "tone", "audio_sink": "discard"}
    lines = ["[sip]"] + [f"{k} = {_toml(v)}" for k, v in sip.items()]
    lines += ["[doorbell]", "pin_factory = \"mock\"", "[health]", "port = 0"]
    lines += ["[node]", f"id = \"{node}\""] if node else []
    (tmp_path / "edge.toml").write_text("\n".join(lines) + "\n")
    return {**os.environ, "EDGE_CONFIG": str(tmp_path / "edge.toml"), "EDGE_STATE_DIR": str(tmp_path / "state"),
            "EDGE_SIP_PASSWORD": DOOR_PASSWORD}


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)


def test_a_test_call_reports_answered_when_the_house_phone_answers(tmp_path, kamailio, house_phones):
    house = house_phones("house")
    house.wait_registered()
    result = edge("sip", "call", "house", "--talk", "0.5", env=device_env(tmp_path, kamailio))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("answered: sip:house@127.0.0.1")
    house.wait_event("CALL_CLOSED")
    assert kamailio.requests("INVITE", "door") == 2  # challenged (407), then with credentials


def test_a_test_call_to_nobody_reports_the_sip_failure(tmp_path, kamailio):
    result = edge("sip", "call", "nobody", env=device_env(tmp_path, kamailio))
    assert result.returncode == 1
    assert result.stdout.startswith("failed (404): sip:nobody@127.0.0.1")


def test_status_of_a_device_that_never_called_says_so(tmp_path, kamailio):
    result = edge("sip", "status", env=device_env(tmp_path, kamailio))
    assert result.returncode == 0, result.stderr
    assert "door@127.0.0.1" in result.stdout and "targets:    house" in result.stdout
    assert "last calls: none yet" in result.stdout


def test_status_shows_the_running_devices_line_and_its_last_call(tmp_path, kamailio, house_phones, make_door):
    from sip.conftest import in_call

    bell, house, pressed = in_call(house_phones, make_door)
    house.hangup()
    bell.wait_event("sip.call", event_id=pressed.event_id)
    env = {**device_env(tmp_path, kamailio, node=bell.config["node"].id), "EDGE_STATE_DIR": str(bell.state_dir)}
    wait_for(lambda: bell.runtime.health.get("worker.sip").state == "OK", 5, message="the line OK in health")
    result = edge("sip", "status", env=env)
    assert result.returncode == 0, result.stderr
    assert "- OK: running" in result.stdout
    assert "answered   sip:house@127.0.0.1" in result.stdout and f"(event {pressed.event_id})" in result.stdout
