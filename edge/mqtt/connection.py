"""The broker connection: one paho-mqtt 2.x client with its own network thread.

Responsible for: the client id (stable and unique per node), MQTT 3.1.1 or 5, credentials,
TLS (CA, optional client certificate), the Last Will, reconnecting, and turning paho's
callbacks into calls on a `ConnectionHandler`. Never raises into paho's thread: a handler
error is logged, the connection carries on.

Reconnecting is paho's own loop (`loop_start`), with our delay: before each retry the
callback sets `reconnect_delay_set(d, d)` to an exponential backoff with jitter
(`edge.breaker.Backoff`), so a fleet that lost one broker does not come back in lockstep
(paho's own schedule doubles a fixed delay, the same on every node).

Sessions are clean: a command that waited on the broker while the node was away (a restart
button pressed an hour ago) must not run on reconnect. paho keeps unacknowledged QoS 1
publishes of this client in memory and re-sends them, in order, after a reconnect; the
durable copy of each event is in the outbox until its PUBACK.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.breaker import Backoff
from edge.mqtt.settings import uses_tls

log = logging.getLogger("edge.mqtt.connection")

PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}
# MQTT 5 brokers announce how many QoS 1 messages they take at once (Receive Maximum:
# mosquitto 20, HiveMQ 10 by default). paho can only set its limit before connecting, so an
# MQTT 5 client keeps to 10, which every broker we know accepts; paho queues the rest, in order.
V5_INFLIGHT = 10


def default_client_id(node_id: str, machine_id_path: Path = Path("/etc/machine-id"),
                      seed_path: Path | None = None) -> str:
    """`edge-<node>-<8 hex of the machine id>`: stable across restarts, and two boards that
    were flashed with the same node id still do not kick each other off the broker (a broker
    disconnects the older of two clients with one id). Without a machine id, a random seed
    kept in `seed_path` (the state directory) does the same job."""
    machine = _read_text(machine_id_path)
    if not machine and seed_path is not None:
        machine = _read_text(seed_path)
        if not machine:
            machine = secrets.token_hex(16)
            try:
                seed_path.write_text(machine + "\n")
            except OSError as exc:  # still unique; only no longer stable across restarts
                log.warning("cannot keep the MQTT client id seed in %s (%s)", seed_path, exc)
    suffix = hashlib.sha256(f"{machine}:{node_id}".encode()).hexdigest()[:8] if machine else "nomachine"
    return f"edge-{node_id}-{suffix}"


def _no_delay(client, userdata, sock) -> None:
    """Send each packet at once. paho leaves Nagle's algorithm on, so a ring published right
    after a QoS 0 state waits for the broker's delayed ACK of that state (40 ms on Linux;
    measured by tests/bench/bench_doorbell.py); MQTT packets are small and few."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # not a TCP socket (a unix socket, a test double)
        log.debug("cannot set TCP_NODELAY: %s", exc)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ConnectionSettings:
    host: str
    port: int
    client_id: str
    will_topic: str
    protocol: str = "3.1.1"
    keepalive_s: int = 30
    username: str = ""
    password: str | None = None
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

    @property
    def uses_tls(self) -> bool:
        return uses_tls(self)

    def describe(self) -> str:
        return f"{'mqtts' if self.uses_tls else 'mqtt'}://{self.host}:{self.port} (MQTT {self.protocol})"


class ConnectionHandler(Protocol):
    def on_connected(self) -> None: ...
    def on_disconnected(self, reason: str) -> None: ...
    def on_acked(self, mid: int, error: str | None) -> None: ...
    def on_message(self, topic: str, payload: bytes, properties: Properties | None, retain: bool) -> None: ...
    def on_subscribed(self) -> None: ...


class ConnectionSetupError(Exception):
    """The client cannot even be set up (TLS files missing or unreadable)."""


class PublishRefused(Exception):
    """paho will never send this message (an invalid topic, a payload over MQTT's size)."""


def _reason(reason_code) -> str:
    return getattr(reason_code, "getName", lambda: str(reason_code))()


class BrokerConnection:
    def __init__(self, settings: ConnectionSettings, handler: ConnectionHandler, rng: random.Random | None = None):
        self.settings = settings
        self.handler = handler
        self._rng = rng or random.Random()
        self._backoff = Backoff(initial=settings.reconnect_min_s, maximum=settings.reconnect_max_s, jitter=0.8)
        self._attempt = 0
        self._stopping = False
        self._connected = threading.Event()
        self.v5 = settings.protocol == "5"
        self.client = self._make_client()
        # Never used in practice (every retry is preceded by a callback that sets it), but
        # paho's own default (1 s doubling to 120 s, no jitter) must not be the fallback.
        delay = self._backoff.delay(0, self._rng)
        self.client.reconnect_delay_set(delay, delay)

    # -- setup ------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        kwargs = {} if self.v5 else {"clean_session": True}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=PROTOCOLS[s.protocol],
                             reconnect_on_failure=True, **kwargs)
        # No enable_logger(): paho logs a spurious ERROR on every clean disconnect, and our
        # callbacks catch and log their own errors (see _call).
        # MQTT 3.1.1 has no limit: the link's own window (max_inflight) bounds the events.
        client.max_inflight_messages_set(V5_INFLIGHT if self.v5 else 0)
        # paho's TCP connect and TLS handshake block its thread; 5 s (its default) would let a
        # black-holed broker hold up a stop longer than the supervisor's stop timeout.
        client.connect_timeout = 3.0
        client.will_set(s.will_topic, "offline", qos=1, retain=True)
        if s.username or s.password:
            client.username_pw_set(s.username or None, s.password)
        if s.uses_tls:
            try:
                client.tls_set(ca_certs=s.tls_ca or None, certfile=s.tls_cert or None, keyfile=s.tls_key or None,
                               cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConnectionSetupError(f"TLS setup failed ({exc}); check [mqtt] tls_ca, tls_cert and tls_key "
                                           f"(PEM files readable by the edge user)") from exc
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = _no_delay
        return client

    def _set_delay(self) -> None:
        """The wait before paho's next attempt: exponential, randomised (see the docstring)."""
        delay = self._backoff.delay(self._attempt, self._rng)
        self._attempt += 1
        self.client.reconnect_delay_set(delay, delay)

    def start(self) -> None:
        s = self.settings
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 0
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=True, properties=properties)
        self.client.loop_start()

    # -- paho callbacks (paho's thread) ----------------------------------------------------
    def _call(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # the broker's doings must never kill paho's thread
            log.exception("MQTT link: %s handler failed", what)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            hint = ""
            if reason_code.value in (134, 135, 4, 5):  # bad user name or password / not authorized
                hint = "; check [mqtt] username and password_file"
            self._call("disconnect", self.handler.on_disconnected, f"broker refused the connection: "
                                                                  f"{_reason(reason_code)}{hint}")
            self._set_delay()
            return
        self._attempt = 0  # the next loss starts the backoff afresh
        self._connected.set()
        receive_maximum = getattr(properties, "ReceiveMaximum", None) if self.v5 else None
        if receive_maximum is not None and receive_maximum < V5_INFLIGHT:
            log.warning("broker takes only %d QoS 1 messages at once (Receive Maximum), fewer than the %d this "
                        "client sends; raise it on the broker or use protocol = \"3.1.1\"", receive_maximum,
                        V5_INFLIGHT)
        self._call("connect", self.handler.on_connected)

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this inside its `except OSError:` and passes no error; the exception
        # being handled says why (refused, unreachable, a certificate that does not verify).
        error = sys.exc_info()[1]
        reason = f"cannot reach {self.settings.describe()}"
        if isinstance(error, ssl.SSLCertVerificationError):
            reason += (f": the broker's certificate does not verify ({error.verify_message}); set [mqtt] tls_ca "
                       f"to the CA that signed it")
        elif error is not None:
            reason += f": {error.strerror or error}" if isinstance(error, OSError) else f": {error}"
        self._call("disconnect", self.handler.on_disconnected, reason)
        self._set_delay()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self._stopping:
            return
        if was:
            self._call("disconnect", self.handler.on_disconnected, f"connection lost: {_reason(reason_code)}")
        self._set_delay()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        error = _reason(reason_code) if reason_code is not None and reason_code.is_failure else None
        self._call("ack", self.handler.on_acked, mid, error)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [_reason(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused a subscription (%s): commands or Home Assistant's birth may not arrive; "
                      "check the broker's ACL for this user", ", ".join(failed))
        self._call("subscribe", self.handler.on_subscribed)

    def _on_message(self, client, userdata, msg) -> None:
        self._call("message", self.handler.on_message, msg.topic, msg.payload, getattr(msg, "properties", None),
                   bool(msg.retain))

    # -- use ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> int | None:
        """The message id (for a QoS 1 PUBACK), or None when it cannot go now; raises
        PublishRefused when it never can."""
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except (ValueError, TypeError) as exc:
            raise PublishRefused(f"{topic}: {exc}") from exc
        # NO_CONN: paho keeps a QoS 1 message and sends it after the reconnect; still ours.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s refused by the client: %s", topic, mqtt.error_string(info.rc))
            return None
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            return None
        return info.mid

    def subscribe(self, filters: list[str], qos: int = 1) -> None:
        if self.v5:  # no_local: do not receive our own discovery configs back
            self.client.subscribe([(f, SubscribeOptions(qos=qos, noLocal=True)) for f in filters])
        else:
            self.client.subscribe([(f, qos) for f in filters])

    def stop(self, last_words: tuple[str, str] | None = None, timeout: float = 1.0) -> None:
        """Say `last_words` (topic, payload; retained, QoS 1) if connected, disconnect
        cleanly and stop paho's thread. Safe to call more than once."""
        if last_words and self.connected:
            try:
                info = self.client.publish(last_words[0], last_words[1], qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (ValueError, RuntimeError):
                pass
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
