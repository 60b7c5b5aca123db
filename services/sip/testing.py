"""Test helpers for the intercom, shipped in the package (as gpiozero ships its testing
module): a fake ctrl_tcp server for protocol edge cases, a real kamailio registrar/proxy
with digest authentication, and real baresip and SIPp peers, all on 127.0.0.1 and free
ports, each stopped by its owner.

Not responsible for: the worker's own code; nothing here is used by the runtime.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from edge.testing.waiting import wait_for
from services.sip.control import ControlLink
from services.sip.netstring import encode


class FakeControlServer:
    """Listens like baresip's ctrl_tcp on 127.0.0.1: records the commands it receives,
    answers each (`answers`: command → (ok, data)), and sends whatever bytes a test hands
    `send_raw` (events, garbage, half a frame)."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self.commands: list[dict] = []
        self.answers: dict[str, tuple[bool, str]] = {}
        self.silent: set[str] = set()  # commands it never answers
        self.conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-ctrl-tcp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self.conn = conn
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b":" in buf:
                size, _, rest = buf.partition(b":")
                if len(rest) <= int(size):
                    break
                message = json.loads(rest[:int(size)])
                buf = rest[int(size) + 1:]
                self.commands.append(message)
                if message["command"] not in self.silent:
                    ok, data_ = self.answers.get(message["command"], (True, ""))
                    self.send({"response": True, "ok": ok, "data": data_, "token": message.get("token")})

    def send(self, message: dict) -> None:
        self.send_raw(encode(json.dumps(message).encode()))

    def send_event(self, type_: str, class_: str = "call", **fields) -> None:
        self.send({"event": True, "type": type_, "class": class_, **fields})

    def send_raw(self, data: bytes) -> None:
        wait_for(lambda: self.conn is not None, 5, message="the control link to connect")
        self.conn.sendall(data)

    def close_connection(self) -> None:
        if self.conn is not None:
            self.conn.shutdown(socket.SHUT_RDWR)
            self.conn.close()

    def close(self) -> None:
        self._listener.close()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(2)
