"""The `edge` command: run, status, config check, audit verify, and the subcommands that
workers contribute through the `edge.cli` entry-point group (e.g. `faces`, `sim`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

from edge import __version__
from edge.config import ConfigError
from edge.runtime import (EXIT_NO_CONFIG, config_path_for, load_config, run, state_dir_for)


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="config file (default: $EDGE_CONFIG or /etc/edge/edge.toml)")
    p.add_argument("--sim", action="store_true", help="simulated hardware (profile `sim`, state in a user directory)")


def device_endpoint(args) -> tuple[str, str | None]:
    """Base URL and token of the running device, found through the same config as `run`."""
    state_dir = state_dir_for(args.sim)
    token = None
    try:
        config, _ = load_config(config_path_for(args.config), args.sim)
        health = config["health"]
        token = health.secret("token")
        host = "127.0.0.1" if health.host in ("0.0.0.0", "::", "") else health.host
        if health.port:
            return f"http://{host}:{health.port}", token
    except ConfigError:
        pass
    try:
        return (state_dir / "endpoint").read_text().strip(), token
    except OSError:
        return "http://127.0.0.1:8790", token


def request(args, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    base, token = device_endpoint(args)
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise SystemExit(f"no edge device is running at {base} ({getattr(exc, 'reason', exc)}); "
                         f"start one with `edge run --sim` (or check [health] host/port in the config)")


def post_sim(args, command: str, payload: dict) -> int:
    """Send a simulator command to the running `edge run --sim`; used by worker CLIs."""
    code, body = request(args, "POST", f"/sim/{command}", payload)
    if code == 200:
        result = body.get("result")
        print(json.dumps(result) if not isinstance(result, str) else result)
        return 0
    print(f"edge sim {command}: {body.get('error', code)}", file=sys.stderr)
    return 1


def cmd_run(args) -> int:
    return run(args.config, args.sim)


def cmd_status(args) -> int:
    code, body = request(args, "GET", "/health")
    if code == 401:
        print("the device wants a token: set [health] token_file or EDGE_HEALTH_TOKEN", file=sys.stderr)
        return 1
    print(f"device: {body['state']}")
    rows = [(name, c["state"], f"{c['for_s']:.0f}s", c["reason"]) for name, c in body["components"].items()]
    widths = [max(len(str(r[i])) for r in rows + [("COMPONENT", "STATE", "FOR", "REASON")]) for i in range(3)]
    for r in [("COMPONENT", "STATE", "FOR", "REASON")] + rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
    return 0 if code == 200 else 1


def cmd_config_check(args) -> int:
    path = config_path_for(args.config)
    try:
        config, _ = load_config(path, args.sim)
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_NO_CONFIG
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.source}: ok (profile {config.profile}, {len(config.sections)} sections)")
    return 0


def cmd_audit_verify(args) -> int:
    """Read-only: opens the store without migrating it and never creates a key, so
    checking a log cannot change it (or the evidence). The state directory comes from
    EDGE_STATE_DIR / --sim, as for `edge run`; --config does not move it."""
    import sqlite3

    from edge.audit import AuditLog
    from edge.store import DB_NAME, Store, StoreUnavailable

    state_dir = state_dir_for(args.sim)
    if not (state_dir / DB_NAME).exists():
        print(f"no store at {state_dir / DB_NAME}; set EDGE_STATE_DIR to the device's state directory",
              file=sys.stderr)
        return 2
    try:
        store = Store(state_dir / DB_NAME, readonly=True)
    except (StoreUnavailable, sqlite3.Error) as exc:
        print(f"cannot open the store {state_dir / DB_NAME} read-only: {exc}", file=sys.stderr)
        return 2
    try:
        report = AuditLog(store, state_dir / "audit.key", state_dir / "audit.anchor", create_key=False).verify()
    except sqlite3.Error as exc:
        print(f"cannot read the audit log in {state_dir / DB_NAME}: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    for problem in report.problems:
        print(f"{'TAMPERED' if report.checked else 'CANNOT VERIFY'}: {problem}")
    if report.unanchored:
        print(f"note: {report.unanchored} valid record(s) after the last anchor (a crash between write and anchor)")
    print(f"{report.records} records: {'ok' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Edge appliance runtime (doorbell, intercom, "
                                     "printer, inventory) reporting to Home Assistant over MQTT.")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the device (Ctrl-C or SIGTERM stops it)")
    _add_config_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="show the running device's health as a table")
    _add_config_arg(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate the config; non-zero exit with what to fix")
    _add_config_arg(c)
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="audit_command", required=True)
    a = asub.add_parser("verify", help="check the audit log's hash chain and anchor")
    _add_config_arg(a)
    a.set_defaults(func=cmd_audit_verify)

    for ep in entry_points(group="edge.cli"):
        ep.load()(sub, _add_config_arg)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
