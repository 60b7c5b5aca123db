"""The local HTTP endpoint: `/health` (JSON; 200 while OK or DEGRADED, 503 when a critical
worker is FAILED or HUNG), `/live`, `/ready`, `/metrics` (Prometheus text). Bound to
127.0.0.1 by default; with a token set, every path needs `Authorization: Bearer <token>`.

Also serves the simulator's control routes (`POST /sim/<command>`), which exist only when
the runtime was started with `--sim`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge import __version__
from edge.config import EXAMPLE_SECRETS, Key, Section, is_loopback
from edge.health import FAILED
from edge.http_guard import GuardedHTTPServer

log = logging.getLogger("edge.health_http")

DEFAULT_PORT = 8790
SECTION = Section("health", (
    Key("host", str, "127.0.0.1", "address the health server binds to", example="127.0.0.1"),
    Key("port", int, DEFAULT_PORT, "port of /health, /live, /ready, /metrics (0: any free port)",
        min=0, max=65535),
    Key("token_file", str, "", "file holding a bearer token required on every path", secret_file=True,
        example="/etc/edge/health-token"),
), "the local health and metrics endpoint", checks=(
    lambda config, problems, warnings: _check_exposure(config, warnings),))


# A bearer token shorter than this can be guessed by trying (16 random bytes, hex: 32).
MIN_TOKEN_CHARS = 16


def _check_exposure(config, warnings: list[str]) -> None:
    cfg = config["health"]
    token = cfg.secret("token")
    if not is_loopback(cfg.host) and not token:
        warnings.append(f"[health] host = {cfg.host!r} exposes health and metrics to the network without a "
                        f"token; set token_file = \"/etc/edge/health-token\" or host = \"127.0.0.1\"")
    if token and len(token) < MIN_TOKEN_CHARS and token.lower() not in EXAMPLE_SECRETS:  # that one is warned of
        warnings.append(f"[health] the token is {len(token)} characters long, short enough to guess; use at least "
                        f"{MIN_TOKEN_CHARS}, for example: openssl rand -hex 16 > /etc/edge/health-token")

MAX_BODY = 64 * 1024
REQUEST_TIMEOUT_S = 2.0


class HealthServer:
    def __init__(self, host: str, port: int, health, registry, ready: Callable[[], bool],
                 token: str | None = None, sim_commands: dict[str, Callable[[dict], Any]] | None = None,
                 node: str = ""):
        self.health = health
        self.node = node  # in /health, so the CLI can tell it reached the device it meant
        self.registry = registry
        self.ready = ready
        self.token = token or None
        self.sim_commands = sim_commands  # None unless --sim
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S  # per read: a client that stalls mid-request is dropped

            def log_message(self, fmt, *args):  # the JSON logger, not stderr
                log.debug(fmt, *args)

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: Any) -> None:
                self._send(code, json.dumps(obj).encode())

            def _authorized(self) -> bool:
                if server.token is None:
                    return True
                got = self.headers.get("Authorization", "")
                if got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), server.token.encode()):
                    return True
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="edge"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_GET(self):
                if not self._authorized():
                    return
                path = self.path.split("?")[0]
                if path == "/health":
                    # the version: an updater commits only when the new release is the one answering
                    body = {**server.health.as_json(), "node": server.node, "version": __version__}
                    self._json(503 if body["state"] == FAILED else 200, body)
                elif path == "/live":
                    self._json(200, {"live": True})
                elif path == "/ready":
                    ok = server.ready()
                    self._json(200 if ok else 503, {"ready": ok})
                elif path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                else:
                    self._json(404, {"error": f"no such path {path}; try /health, /live, /ready or /metrics"})

            def do_POST(self):
                if not self._authorized():
                    return
                path = self.path.split("?")[0]
                if server.sim_commands is None or not path.startswith("/sim/"):
                    self._json(404, {"error": "not found (simulator commands exist only with `edge run --sim`)"})
                    return
                name = path[len("/sim/"):]
                handler = server.sim_commands.get(name)
                if handler is None:
                    self._json(404, {"error": f"unknown simulator command {name!r}; "
                                              f"known: {', '.join(sorted(server.sim_commands))}"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    self._json(400, {"ok": False, "error": "Content-Length must be a whole number of bytes"})
                    return
                if length > MAX_BODY:
                    self._json(413, {"error": "request body too large"})
                    return
                try:
                    args = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(args, dict):
                        raise ValueError("the body must be a JSON object")
                    self._json(200, {"ok": True, "result": handler(args)})
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    self._json(400, {"ok": False, "error": str(exc)})

        self._httpd = GuardedHTTPServer((host, port), Handler)
        self.address = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve, name="health-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.stop()
        if self._thread:
            self._thread.join(5)
        self._httpd.close()
