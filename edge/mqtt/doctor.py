"""`edge doctor`'s check of the MQTT link: can this device reach its broker with the
configured credentials and TLS files? One short connection of its own (a client id of its
own, no Last Will, so the running device is neither kicked off nor marked offline).

Not responsible for: the link itself (edge/mqtt/link.py).
"""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as mqtt

from edge.doctor import FAIL, OK, SKIP, Check
from edge.mqtt.settings import uses_tls

CONNECT_TIMEOUT_S = 5.0


def broker_check(config, timeout_s: float = CONNECT_TIMEOUT_S) -> Check:
    cfg = config["mqtt"]
    if not cfg.host:
        detail = "no broker configured; `edge run --sim` starts an embedded one" if config.profile == "sim" \
            else "no broker configured: nothing reaches Home Assistant"
        return Check("mqtt", "broker", SKIP if config.profile == "sim" else FAIL, detail,
                     "set [mqtt] host (or EDGE_MQTT_HOST) to your broker, or [mqtt] enabled = false")
    where = f"{'mqtts' if uses_tls(cfg) else 'mqtt'}://{cfg.host}:{cfg.port}"
    answer: dict[str, str] = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        answer["reason"] = "ok" if not reason_code.is_failure else str(reason_code)
        done.set()

    protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{config['node'].id}-doctor",
                         protocol=protocol)
    client.on_connect = on_connect
    if cfg.username or cfg.secret("password"):
        client.username_pw_set(cfg.username or None, cfg.secret("password"))
    try:
        if uses_tls(cfg):
            client.tls_set(ca_certs=cfg.tls_ca or None, certfile=cfg.tls_cert or None, keyfile=cfg.tls_key or None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.connect(cfg.host, cfg.port, keepalive=10)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Check("mqtt", "broker", FAIL, f"cannot connect to {where}: {exc}",
                     "check [mqtt] host and port, that the broker runs, and the TLS files (tls_ca, tls_cert, tls_key)")
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    reason = answer.get("reason")
    if reason is None:
        return Check("mqtt", "broker", FAIL, f"{where} accepted the connection but did not answer MQTT within "
                     f"{timeout_s:g} s", "is that port an MQTT broker (and TLS set as the broker expects)?")
    if reason != "ok":
        return Check("mqtt", "broker", FAIL, f"{where} refused the connection: {reason}",
                     "check [mqtt] username and password_file (or EDGE_MQTT_PASSWORD) against the broker's users")
    return Check("mqtt", "broker", OK, f"connected to {where}" + (f" as {cfg.username}" if cfg.username else ""))
