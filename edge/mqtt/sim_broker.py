"""The broker `edge run --sim` starts when no `[mqtt] host` is set: mosquitto, as a child
process on 127.0.0.1 (through the runtime's child helper), when it is installed, else the
pure-Python amqtt inside the process (edge/mqtt/embedded_broker.py).

mosquitto first because amqtt (0.12.1) does not filter retained messages: a subscriber to
`nothing/here` got every retained message, the simulator's banner line flooded the
terminal with discovery configs and JPEG snapshots. Both listen on 127.0.0.1 only, allow
anonymous clients and keep nothing on disk; both move to a free port when the wanted one is
taken (a real broker there is not the simulator's to publish into).

Not for production: no persistence, no authentication, loopback only.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path

from edge.child import ChildNotReady, SupervisedChild
from edge.mqtt.embedded_broker import WATCH, EmbeddedBroker, EmbeddedBrokerError, any_free_port, port_free

log = logging.getLogger("edge.mqtt.sim_broker")


class MosquittoChild:
    """mosquitto on 127.0.0.1, configured in a temporary directory of its own."""

    def __init__(self, program: str, port: int = 1883):
        self.program = program
        self.host = "127.0.0.1"
        self.wanted_port = port
        self.port = port
        self._dir: tempfile.TemporaryDirectory | None = None
        self._child = SupervisedChild("mosquitto", logging.getLogger("edge.mqtt.sim_broker.mosquitto"))

    def start(self, timeout: float = 10.0) -> "MosquittoChild":
        self.port = self.wanted_port if port_free(self.wanted_port) else any_free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="edge-sim-broker-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
                        f"log_dest stdout\nlog_type error\nlog_type warning\n")
        try:
            self._child.start([self.program, "-c", str(conf)])
            self._child.wait_ready(timeout, check=self._answers)
        except (OSError, ChildNotReady) as exc:
            self.stop()
            raise EmbeddedBrokerError(f"mosquitto did not start on {self.host}:{self.port}: {exc}") from exc
        return self

    def _answers(self, slice_s: float) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=max(0.05, slice_s)).close()
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        self._child.stop(timeout)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def describe(self) -> str:
        moved = f" (port {self.wanted_port} was taken)" if self.port != self.wanted_port else ""
        return (f"simulator's MQTT broker (mosquitto) on {self.host}:{self.port}{moved}; watch it with: "
                + WATCH.format(host=self.host, port=self.port))


def start_sim_broker(port: int, program: str | None = None) -> MosquittoChild | EmbeddedBroker:
    """mosquitto when installed (`program`, else found on PATH), else amqtt in-process."""
    program = program or shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if program:
        return MosquittoChild(program, port).start()
    log.info("mosquitto is not installed: the simulator's broker is amqtt (it does not filter retained "
             "messages; `sudo apt install mosquitto` for one that does)")
    return EmbeddedBroker(port).start()
