"""TLS with a test CA made here (broker certificate and a client certificate), user name and
password, and the config warning for credentials sent in clear text."""

from __future__ import annotations

import subprocess

from edge import config as configmod
from edge.mqtt.link import MqttLink
from edge.assembly import all_sections
from edge.testing.mosquitto import Mosquitto
from edge.testing.pki import make_pki
from edge.testing.ports import free_port
from edge.testing.requirements import require_program
from edge.testing.waiting import wait_for
from mqtt.helpers import NODE, link_of, running_runtime, wait_connected


def test_tls_with_client_certificate_and_password(tmp_path, recorders):
    program = require_program("mosquitto")
    passwd = require_program("mosquitto_passwd", "mosquitto")
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    subprocess.run([passwd, "-b", "-c", str(pki / "passwords"), "edge", "s3cret-for-tests"], check=True,
                   capture_output=True)
    tls_port = free_port()
    conf = (f"user root\npassword_file {pki / 'passwords'}\n"
            f"listener {tls_port} 127.0.0.1\ncafile {pki / 'ca.pem'}\ncertfile {pki / 'broker.pem'}\n"
            f"keyfile {pki / 'broker.key'}\nrequire_certificate true\n")
    with Mosquitto(tmp_path / "broker", program=program, extra_conf=conf) as broker:
        rec = recorders(broker.port, f"edge/{NODE}/status")  # the plain listener, for watching
        env = {"EDGE_MQTT_TLS_CA": str(pki / "ca.pem"), "EDGE_MQTT_TLS_CERT": str(pki / "client.pem"),
               "EDGE_MQTT_TLS_KEY": str(pki / "client.key"), "EDGE_MQTT_USERNAME": "edge",
               "EDGE_MQTT_PASSWORD": "s3cret-for-tests"}
        with running_runtime(tmp_path / "state", tls_port, env=env) as rt:
            link = wait_connected(rt)
            assert link.broker_description.startswith(f"mqtts://127.0.0.1:{tls_port}")
            rec.wait_latest(f"edge/{NODE}/status", b"online")

        # A wrong password: refused, said so, and the link is degraded, not crashed.
        with running_runtime(tmp_path / "state2", tls_port, env={**env, "EDGE_MQTT_PASSWORD": "wrong"}) as rt:
            wait_for(lambda: "refused" in (link_of(rt).health() or ("", ""))[1], 10, message="a refusal")
            assert "username" in link_of(rt).health()[1] and not link_of(rt).connected
            assert rt.supervisor.runner("mqtt").crashes == 0


def test_a_broker_certificate_from_another_ca_is_refused_with_the_reason(tmp_path):
    program = require_program("mosquitto")
    pki, stranger = tmp_path / "pki", tmp_path / "stranger"
    pki.mkdir()
    stranger.mkdir()
    make_pki(pki)
    make_pki(stranger)  # another CA, which did not sign the broker's certificate
    tls_port = free_port()
    conf = (f"user root\nlistener {tls_port} 127.0.0.1\ncafile {pki / 'ca.pem'}\ncertfile {pki / 'broker.pem'}\n"
            f"keyfile {pki / 'broker.key'}\nallow_anonymous true\n")
    with Mosquitto(tmp_path / "broker", program=program, extra_conf=conf):
        with running_runtime(tmp_path / "state", tls_port, env={"EDGE_MQTT_TLS_CA": str(stranger / "ca.pem")}) as rt:
            wait_for(lambda: "does not verify" in (link_of(rt).health() or ("", ""))[1], 10,
                     message="the certificate refusal in the link's health")
            state, reason = link_of(rt).health()
            assert state == "DEGRADED" and "tls_ca" in reason and not link_of(rt).connected
            assert rt.supervisor.runner("mqtt").crashes == 0


def test_missing_tls_files_degrade_the_link_with_a_reason(tmp_path, mosquitto):
    env = {"EDGE_MQTT_TLS_CA": str(tmp_path / "nowhere.pem")}
    with running_runtime(tmp_path / "state", mosquitto.port, env=env) as rt:
        wait_for(lambda: link_of(rt).health() is not None, 10, message="health")
        state, reason = link_of(rt).health()
        assert state == "DEGRADED" and "TLS setup failed" in reason and "tls_ca" in reason
        assert rt.supervisor.runner("mqtt").crashes == 0


def _warnings(env: dict) -> list[str]:
    return configmod.build(all_sections([MqttLink]), {}, env, "pi").warnings


def test_credentials_without_tls_to_a_remote_host_draw_a_warning(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    remote = {"EDGE_MQTT_HOST": "broker.example.net", "EDGE_MQTT_USERNAME": "edge", "EDGE_MQTT_PASSWORD": "pw-x"}
    assert any("without TLS" in w for w in _warnings(remote))
    assert not any("without TLS" in w for w in _warnings({**remote, "EDGE_MQTT_TLS_CA": str(ca)}))
    assert not any("without TLS" in w for w in _warnings({**remote, "EDGE_MQTT_HOST": "127.0.0.1"}))
    assert not any("without TLS" in w for w in _warnings({"EDGE_MQTT_HOST": "broker.example.net"}))
    assert any("host is empty" in w for w in _warnings({}))
