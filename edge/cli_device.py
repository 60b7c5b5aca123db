"""The device a CLI command acts on, found the same way for every command: its config
(`--config`, `EDGE_CONFIG`, /etc/edge/edge.toml), its state directory (`EDGE_STATE_DIR`,
the simulator's user directory with `--sim`, /var/lib/edge), its store opened with every
component's tables (edge.assembly.store_schemas), its audit log, and the running device's
health endpoint for `edge status` and `edge sim ...`.

Workers' CLI modules (`edge faces`, `edge sim camera`, ...) use this instead of opening
files themselves, so what `edge run` sees and what the CLI changes are one device.

Not responsible for: argument parsing (edge.cli and the workers' `register` functions).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from edge.assembly import config_path_for, load_config, state_dir_for, store_schemas
from edge.audit import AuditLog, key_path_for
from edge.config import Config, ConfigError
from edge.store import DB_NAME, Store, StoreUnavailable
from edge.worker import Worker


def _only_the_simulator_runs(environ: Mapping[str, str]) -> bool:
    """No installed device here (no /var/lib/edge store), and a simulator has left its
    endpoint: `edge faces list` then means the simulator's faces."""
    installed = state_dir_for(False, environ)
    simulator = state_dir_for(True, environ)
    return not (installed / DB_NAME).exists() and (simulator / "endpoint").exists()


def add_device_args(p: argparse.ArgumentParser) -> None:
    """The options every command that acts on a device takes."""
    p.add_argument("--config", metavar="FILE", help="config file (default: $EDGE_CONFIG or /etc/edge/edge.toml)")
    p.add_argument("--sim", action="store_true", help="simulated hardware (profile `sim`, state in a user directory)")


class CliDevice:
    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str] = os.environ):
        explicit = bool(getattr(args, "sim", False) or environ.get("EDGE_STATE_DIR") or getattr(args, "config", None)
                        or environ.get("EDGE_CONFIG"))
        # One rule for every command: what the options or the environment name; else the
        # device that is running (an installed one, or a simulator when only that runs);
        # else the installed device's defaults.
        self.sim = bool(getattr(args, "sim", False)) or (not explicit and _only_the_simulator_runs(environ))
        self.config_path = config_path_for(getattr(args, "config", None), environ)
        self.state_dir = state_dir_for(self.sim, environ)
        self._loaded: tuple[Config, list[type[Worker]]] | None = None
        self._endpoint: tuple[str, str | None] | None = None

    def describe(self) -> str:
        """Which device a command acted on, for its last line."""
        try:
            node = repr(self.load()[0]["node"].id)
        except ConfigError:
            node = "(invalid config)"
        return f"device {node}{' (simulator)' if self.sim else ''}, state in {self.state_dir}"

    # -- config -----------------------------------------------------------------------------
    def load(self) -> tuple[Config, list[type[Worker]]]:
        """The config and worker classes; raises ConfigError."""
        if self._loaded is None:
            self._loaded = load_config(self.config_path, self.sim, state_dir=self.state_dir)
        return self._loaded

    @property
    def config(self) -> Config:
        """The config, or exit with what is wrong and how to check it."""
        try:
            return self.load()[0]
        except ConfigError as exc:
            raise SystemExit(f"{exc.source}: invalid configuration ({exc.problems[0]}); "
                             f"check it with `edge config check`") from None

    # -- the store --------------------------------------------------------------------------
    def open_store(self) -> Store:
        """The device's store, migrated to every component's tables (the worker classes come
        from the installed entry points even when the config is invalid)."""
        try:
            classes = self.load()[1]
        except ConfigError:
            from edge.assembly import worker_classes
            classes = worker_classes()
        try:
            return Store(self.state_dir / DB_NAME, schemas=store_schemas(classes))
        except (sqlite3.Error, OSError) as exc:
            raise SystemExit(f"cannot open the device's store in {self.state_dir} ({exc}); run as the device's "
                             f"user (sudo -u edge ...), or set EDGE_STATE_DIR to its state directory") from None

    def audit(self, store: Store, action: str, detail: dict) -> None:
        """Record a change made from the command line, by whom; a failure to audit is said,
        not hidden (the change itself is already made)."""
        try:
            AuditLog(store, self.key_path(), self.state_dir / "audit.anchor").append(
                f"cli:{getpass.getuser()}", action, detail)
        except (OSError, StoreUnavailable) as exc:
            print(f"warning: the change was made but could not be written to the audit log ({exc})",
                  file=sys.stderr)

    def key_path(self) -> Path:
        """The audit key: `[audit] key_file` of the device's config (beside the database
        when unset, or when the config cannot be read)."""
        try:
            return key_path_for(self.load()[0], self.state_dir)
        except ConfigError:
            return self.state_dir / "audit.key"

    # -- the running device -------------------------------------------------------------------
    def _candidates(self) -> tuple[list[str], str | None, str | None]:
        """Where the running device may answer (its endpoint file first: it names the port
        the device really got, which a taken port can change), the token, the node id."""
        urls, token, node = [], None, None
        try:
            urls.append((self.state_dir / "endpoint").read_text().strip())
        except OSError:
            pass
        try:
            config = self.load()[0]
            health, node = config["health"], config["node"].id
            token = health.secret("token")
            host = "127.0.0.1" if health.host in ("0.0.0.0", "::", "") else health.host
            if health.port:
                urls.append(f"http://{host}:{health.port}")
        except ConfigError:
            pass
        return list(dict.fromkeys(urls or ["http://127.0.0.1:8790"])), token, node

    def health_candidates(self) -> tuple[list[str], str | None]:
        """Where the running device may answer, and its token (the updater polls these)."""
        urls, token, _ = self._candidates()
        return urls, token

    def endpoint(self) -> tuple[str, str | None]:
        """Base URL and token of the running device: the first candidate whose /health
        answers as an edge device of this config's node (a stranger that took the port, or
        another device, is passed over and named). Exits with every reason otherwise."""
        if self._endpoint is not None:
            return self._endpoint
        urls, token, node = self._candidates()
        problems = []
        for url in urls:
            try:
                code, body = http_json("GET", url + "/health", None, token, 5.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                problems.append(f"no edge device is running at {url} ({getattr(exc, 'reason', exc)})")
                continue
            if code == 401:  # cannot look without the token; the caller says what to do
                self._endpoint = (url, token)
                return self._endpoint
            if not isinstance(body.get("components"), dict) or "state" not in body:
                problems.append(f"the server at {url} is not an edge device")
                continue
            if node and body.get("node") not in (None, node):
                problems.append(f"the device at {url} is node {body['node']!r}, not {node!r} (this config's "
                                f"[node] id)")
                continue
            self._endpoint = (url, token)
            return self._endpoint
        raise SystemExit("; ".join(problems) + "; start one with `edge run --sim` (or check [health] host/port "
                         "and [node] id in the config)")

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
        base, token = self.endpoint()
        try:
            return http_json(method, base + path, body, token, timeout)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise SystemExit(f"the edge device at {base} stopped answering ({getattr(exc, 'reason', exc)})") from None

    def post_sim(self, command: str, payload: dict) -> int:
        """Send a simulator command to the running `edge run --sim`; prints its answer."""
        code, body = self.request("POST", f"/sim/{command}", payload)
        if code == 200:
            result = body.get("result")
            print(json.dumps(result) if not isinstance(result, str) else result)
            return 0
        print(f"edge sim {command}: {body.get('error', code)}", file=sys.stderr)
        return 1


def http_json(method: str, url: str, body: dict | None, token: str | None, timeout: float) -> tuple[int, dict]:
    """(status, JSON body); a body that is not a JSON object comes back as {} (a stranger)."""
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        parsed = {}
    return code, parsed if isinstance(parsed, dict) else {}
