"""The link to baresip's ctrl_tcp module: netstring-framed JSON over one TCP connection on
127.0.0.1 (baresip 1.0 serves a single connection: a second one replaces the first).

Commands go out as {"command", "params", "token"}; baresip answers each with
{"response": true, "ok", "data", "token"} and, unasked, sends {"event": true, "class",
"type", "param", "id", ...} for registrations and calls (modules/ctrl_tcp/ctrl_tcp.c). A
reader thread splits the stream into frames: responses wake the command waiting for their
token, events go to a queue for the owner. What the child sends is not trusted: a frame
that is not a JSON object is counted and skipped; a broken frame (bad length, missing
comma, oversized) ends the link, since a byte stream cannot be resynchronised; a frame cut
off by the end of the connection is counted as truncated.

Not responsible for: starting baresip (baresip.py), what events mean (baresip.py, calls.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import socket
import threading
import time
from typing import Callable

from services.sip.netstring import NetstringDecoder, NetstringError, encode

COMMAND_TIMEOUT_S = 5.0


class ControlError(Exception):
    """The command could not be carried out: the link is down, or baresip did not answer."""


class ControlLink:
    """One connection to ctrl_tcp. `events` is a queue of event dicts; a None in it says the
    link has ended (`ended` holds why)."""

    def __init__(self, port: int, log: logging.Logger, host: str = "127.0.0.1"):
        self.host, self.port, self.log = host, port, log
        self.events: queue.Queue[dict | None] = queue.Queue()
        self.malformed = 0   # frames that were not a JSON object
        self.truncated = 0   # frames cut off by the end of the connection
        self.broken = 0      # streams that stopped being netstrings
        self.ended: str | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._tokens = itertools.count(1)
        self._waiting: dict[str, list] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()

    def connect(self, timeout_s: float, exited: Callable[[], object] = lambda: None) -> None:
        """Connect, retrying until `timeout_s` (the child opens its port while it starts);
        ControlError when it does not accept in time, or at once when `exited()` says the
        child is gone (its exit code: a port taken makes baresip exit with 98 at once)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as exc:
                code = exited()
                if code is not None:
                    raise ControlError(f"baresip exited ({code}) before its control port "
                                       f"{self.host}:{self.port} accepted a connection") from None
                if time.monotonic() >= deadline:
                    raise ControlError(f"baresip's control port {self.host}:{self.port} did not accept a "
                                       f"connection within {timeout_s:g} s ({exc.strerror or exc})") from None
                time.sleep(0.01)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self.ended = sock, None
        self._reader = threading.Thread(target=self._read, args=(sock,), name="sip-control", daemon=True)
        self._reader.start()

    @property
    def connected(self) -> bool:
        return self._sock is not None and self.ended is None

    def command(self, command: str, params: str | None = None, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Run a baresip command; its answer's text. ControlError when baresip refuses it,
        does not answer within `timeout_s`, or the link is down."""
        token = f"t{next(self._tokens)}"
        message = {"command": command, "token": token}
        if params is not None:
            message["params"] = params
        slot: list = []
        with self._cond:
            if not self.connected:
                raise ControlError(f"no link to baresip ({self.ended or 'not connected'})")
            self._waiting[token] = slot
        try:
            with self._send_lock:
                self._sock.sendall(encode(json.dumps(message).encode()))
            with self._cond:
                if not self._cond.wait_for(lambda: slot or self.ended, timeout_s):
                    raise ControlError(f"baresip did not answer {command!r} within {timeout_s:g} s")
                if not slot:
                    raise ControlError(f"the link to baresip ended during {command!r} ({self.ended})")
        except OSError as exc:
            raise ControlError(f"cannot send {command!r} to baresip ({exc})") from None
        finally:
            with self._cond:
                self._waiting.pop(token, None)
        response = slot[0]
        data = response.get("data")
        data = data if isinstance(data, str) else ""
        if response.get("ok") is not True:
            raise ControlError(f"baresip refused {command!r}: {data.strip() or 'no reason given'}")
        return data

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(2.0)

    def _read(self, sock: socket.socket) -> None:
        decoder = NetstringDecoder()
        reason = "baresip closed the control connection"
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    if decoder.pending:
                        self.truncated += 1
                        self.log.warning("baresip's control connection ended inside a frame (%d bytes held); "
                                         "dropped", decoder.pending)
                    break
                for frame in decoder.feed(data):
                    self._dispatch(frame)
        except NetstringError as exc:
            self.broken += 1
            reason = f"baresip sent data that is not netstring-framed ({exc})"
            self.log.error("%s; the link is dropped and baresip restarted", reason)
        except OSError as exc:
            reason = f"control connection failed ({exc})"
        with self._cond:
            self.ended = reason
            self._cond.notify_all()
        self.events.put(None)

    def _dispatch(self, frame: bytes) -> None:
        try:
            # Replacement characters for bytes that are not UTF-8: baresip passes on what a
            # PBX said (a Server header in Latin-1), and the answer must still reach its command.
            message = json.loads(frame.decode("utf-8", "replace"))
        except ValueError as exc:
            message = exc
        if not isinstance(message, dict):
            self.malformed += 1
            self.log.warning("baresip sent a control frame that is not a JSON object (%d bytes); skipped",
                             len(frame))
            return
        if message.get("response") is True:
            with self._cond:
                slot = self._waiting.get(str(message.get("token")))
                if slot is not None:
                    slot.append(message)
                    self._cond.notify_all()
            return
        if message.get("event") in (True, "true") and isinstance(message.get("type"), str):
            self.events.put(message)
            return
        self.malformed += 1
        self.log.warning("baresip sent a control message that is neither a response nor an event; skipped")
