"""The `[mqtt]` config section (broker, TLS, discovery, outbox, commands) and its checks.

Environment overrides follow the schema: `EDGE_MQTT_HOST`, `EDGE_MQTT_PORT`,
`EDGE_MQTT_PASSWORD` (the secret itself, instead of `password_file`), ...
"""

from __future__ import annotations

from pathlib import Path

from edge.config import Key, Section, is_loopback


def uses_tls(cfg) -> bool:
    """TLS is on with `tls = true` or implied by a CA file (the section or ConnectionSettings)."""
    return bool(cfg.tls or cfg.tls_ca)


def _check(config, problems: list[str], warnings: list[str]) -> None:
    cfg = config["mqtt"]
    if not cfg.enabled:
        return
    if (cfg.username or cfg.secret("password")) and not uses_tls(cfg) and cfg.host and not is_loopback(cfg.host):
        warnings.append(f"[mqtt] username/password are sent to {cfg.host} without TLS, readable by anyone on the "
                        f"network; set tls_ca = \"/etc/edge/mqtt-ca.pem\" (and port = 8883) or use a local broker")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        problems.append("[mqtt] tls_cert and tls_key go together (the client certificate and its private key); "
                        "set both, for example: tls_cert = \"/etc/edge/mqtt-client.pem\", "
                        "tls_key = \"/etc/edge/mqtt-client.key\"")
    for key in ("tls_ca", "tls_cert", "tls_key"):
        if cfg[key] and not Path(cfg[key]).is_file():
            warnings.append(f"[mqtt] {key}: {cfg[key]} does not exist (yet); the link stays disconnected until it does")
    if cfg.reconnect_min_s > cfg.reconnect_max_s:
        problems.append(f"[mqtt] reconnect_min_s ({cfg.reconnect_min_s:g}) is above reconnect_max_s "
                        f"({cfg.reconnect_max_s:g}); for example: reconnect_min_s = 1, reconnect_max_s = 60")
    if cfg.birth_delay_min_s > cfg.birth_delay_max_s:
        problems.append(f"[mqtt] birth_delay_min_s ({cfg.birth_delay_min_s:g}) is above birth_delay_max_s "
                        f"({cfg.birth_delay_max_s:g}); for example: birth_delay_min_s = 1, birth_delay_max_s = 5")
    if not cfg.host and config.profile != "sim":
        warnings.append("[mqtt] host is empty: nothing reaches Home Assistant; set host = \"homeassistant.local\" "
                        "(your broker) or enabled = false")


SECTION = Section("mqtt", (
    Key("enabled", bool, True, "report to Home Assistant over MQTT"),
    Key("host", str, "", "broker host name or address; empty in the simulator starts an embedded broker",
        example="homeassistant.local"),
    Key("port", int, 1883, "broker port (TLS brokers usually listen on 8883); the embedded broker's port in the "
        "simulator (a free one if it is taken)", min=1, max=65535),
    Key("protocol", str, "3.1.1", "MQTT protocol version", choices=("3.1.1", "5")),
    Key("username", str, "", "user name on the broker", example="edge"),
    Key("password_file", str, "", "file holding the broker password (or set EDGE_MQTT_PASSWORD)",
        secret_file=True, example="/etc/edge/mqtt-password"),
    Key("tls", bool, False, "use TLS with the system's CA certificates (implied by tls_ca)"),
    Key("tls_ca", str, "", "CA certificate file that signed the broker's certificate; turns TLS on",
        example="/etc/edge/mqtt-ca.pem"),
    Key("tls_cert", str, "", "client certificate file, when the broker asks for one",
        example="/etc/edge/mqtt-client.pem"),
    Key("tls_key", str, "", "private key of the client certificate", example="/etc/edge/mqtt-client.key"),
    Key("client_id", str, "", "MQTT client id (default: edge-<node id>-<machine hash>, stable and unique)"),
    Key("discovery_prefix", str, "homeassistant", "Home Assistant's discovery prefix"),
    Key("keepalive_s", int, 30, "seconds between keepalive pings; a silent broker is declared lost after "
        "about twice this", min=1, max=3600),
    Key("reconnect_min_s", float, 1.0, "first reconnect delay (randomised, then doubling)", min=0.05),
    Key("reconnect_max_s", float, 60.0, "longest reconnect delay", min=0.1),
    Key("birth_delay_min_s", float, 1.0, "shortest random delay before re-announcing after Home Assistant "
        "restarts", min=0),
    Key("birth_delay_max_s", float, 5.0, "longest such delay", min=0),
    Key("max_inflight", int, 100, "events sent and not yet acknowledged by the broker", min=1, max=1000),
    Key("outbox_max_bytes", int, 16 * 2**20, "disk space the outbox of unsent events may use", min=4096),
    Key("outbox_ttl_s", float, 7 * 86400.0, "age after which an unsent ordinary event is dropped (rings and "
        "other never-drop events are kept until the byte cap)", min=1),
    Key("allow_dangerous_commands", bool, False, "accept commands that open the door or change who is known "
        "(default off)"),
), "the link to Home Assistant over MQTT", checks=(_check,))
