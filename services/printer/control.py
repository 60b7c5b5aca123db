"""The printer's local control socket: how `edge printer ...` reaches the running device.

A Unix socket in the state directory (`printer.sock`, mode 0600: only the device's user
and root), one JSON request per connection: {"command": "printer_pause", "payload": {}};
the answer {"ok": true, "result": ...} or {"ok": false, "error": "...", "code": "..."}.
Requests go through the command registry (`ctx.commands.call(..., via="cli")`), so the CLI
gets exactly the validation and refusals Home Assistant gets; only the printer's own
commands are reachable here. Moonraker serves its API on a Unix socket for the same reason:
local tools need no network exposure and no token.

Not responsible for: the CLI's output (cli.py), the commands (commands.py, worker.py).
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Callable

from edge.commands import VIA_CLI, CommandRejected

SOCKET_NAME = "printer.sock"
MAX_REQUEST = 8192
CLIENT_TIMEOUT_S = 30.0


class ControlSocket:
    def __init__(self, path: Path, call: Callable[..., Any], allowed: tuple[str, ...]):
        self.path = path
        self._call = call
        self._allowed = allowed
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "ControlSocket":
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 5.0

            def handle(self):
                try:
                    raw = self.rfile.readline(MAX_REQUEST)
                    reply = owner._answer(raw)
                except (OSError, ValueError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}", "code": "malformed"}
                try:
                    self.wfile.write(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass  # the CLI went away

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left by a runtime that was killed
        server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        server.daemon_threads = True
        os.chmod(self.path, 0o600)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="printer-control", daemon=True)
        self._thread.start()
        return self

    def _answer(self, raw: bytes) -> dict:
        request = json.loads(raw or b"{}")
        if not isinstance(request, dict) or not isinstance(request.get("payload", {}), dict):
            return {"ok": False, "error": "the request must be {\"command\": ..., \"payload\": {...}}",
                    "code": "malformed"}
        name = request.get("command")
        if name not in self._allowed:
            return {"ok": False, "error": f"unknown printer command {name!r}; known: {', '.join(self._allowed)}",
                    "code": "unknown"}
        try:
            return {"ok": True, "result": self._call(name, request.get("payload") or {}, via=VIA_CLI)}
        except CommandRejected as exc:
            return {"ok": False, "error": str(exc), "code": exc.code}

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        self.path.unlink(missing_ok=True)


def request(path: Path, command: str, payload: dict | None = None, timeout: float = CLIENT_TIMEOUT_S) -> dict:
    """One request to a running printer worker (the CLI's side); OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command, "payload": payload or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")
