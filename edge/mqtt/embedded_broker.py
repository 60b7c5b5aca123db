"""An MQTT broker inside the process, for `edge run --sim` with no `[mqtt] host` where
mosquitto is not installed (edge/mqtt/sim_broker.py prefers it): the pure-Python amqtt
(MQTT 3.1.1), on 127.0.0.1 only, so a person can watch the device with `mosquitto_sub` or
point a Home Assistant at it without installing anything.

It runs its own asyncio loop in one thread and outlives restarts of the MQTT link (Home
Assistant stays connected to it); the link stops it when the runtime stops. amqtt is an
optional dependency (`pip install 'edge-appliance[sim]'`).

Not for production: no persistence, no authentication, loopback only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading

log = logging.getLogger("edge.mqtt.embedded_broker")

# Watching the simulator's broker (whichever runs), without the visitor snapshots' binary
# payloads; README shows the same line.
WATCH = "mosquitto_sub -h {host} -p {port} -t 'edge/#' -T 'edge/+/event/doorbell.snapshot' -v"


class EmbeddedBrokerError(Exception):
    pass


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int = 1883):
        self.host = "127.0.0.1"
        self.wanted_port = port
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    def start(self, timeout: float = 10.0) -> "EmbeddedBroker":
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise EmbeddedBrokerError("the simulator's embedded broker needs amqtt: "
                                      "pip install 'edge-appliance[sim]' (or set [mqtt] host)") from exc
        # A broker already on the wanted port (a local mosquitto) is not ours to use: a
        # simulator must not publish into someone's real Home Assistant by surprise.
        self.port = self.wanted_port if port_free(self.wanted_port) else any_free_port()
        logging.getLogger("amqtt").setLevel(logging.WARNING)  # it logs every packet at INFO
        logging.getLogger("transitions").setLevel(logging.WARNING)
        config = {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mqtt-embedded-broker", daemon=True)
        self._thread.start()

        async def start_broker():
            broker = Broker(config, loop=self._loop)
            await broker.start()
            return broker
        try:
            self._broker = asyncio.run_coroutine_threadsafe(start_broker(), self._loop).result(timeout)
        except Exception as exc:
            self.stop()
            raise EmbeddedBrokerError(f"embedded MQTT broker failed to start on {self.host}:{self.port}: "
                                      f"{exc}") from exc
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(timeout)
            except Exception as exc:  # a broker that cannot stop cleanly still has its thread ended below
                log.warning("embedded broker did not shut down cleanly: %s", exc)
            self._broker = None

        async def cancel_rest():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("embedded broker's tasks did not end in %.0f s (%r); stopping its loop anyway", timeout, exc)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        loop.close()

    def describe(self) -> str:
        moved = f" (port {self.wanted_port} was taken)" if self.port != self.wanted_port else ""
        return (f"embedded MQTT broker (amqtt) on {self.host}:{self.port}{moved}; watch it with: "
                + WATCH.format(host=self.host, port=self.port))
