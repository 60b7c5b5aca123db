"""`edge sip status` (the line as the running device reports it, and the last calls from
its store) and `edge sip call TARGET` (a test call from this machine with the device's
account, through a baresip of its own, and its result).

Not responsible for: the running intercom (worker.py); this process never touches it.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

from edge.cli_device import CliDevice
from edge.clock import SYSTEM_CLOCK
from edge.config import SectionValues
from edge.store import StoreUnavailable
from services.sip.backend import BackendError, BackendGone, CallEvent, LineEvent
from services.sip.baresip import BaresipBackend, free_sip_port, target_uri
from services.sip.calls import CallSettings, Dial, DoorCall, Finished, Hangup
from services.sip.worker import CALL_EVENT


def cmd_status(args) -> int:
    device = CliDevice(args)
    cfg = device.config["sip"]
    if not cfg.enabled:
        print(f"the intercom is disabled on {device.describe()}; set [sip] enabled = true")
    else:
        try:
            code, body = device.request("GET", "/health")
            sip = (body.get("components") or {}).get("worker.sip")
            line = f"{sip['state']}: {sip['reason']}" if sip else "not running"
        except SystemExit as exc:
            line = f"unknown ({exc})"
        print(f"line:       {cfg.username}@{cfg.registrar} ({cfg.transport}) - {line}")
        print(f"targets:    {', '.join(cfg.targets) or 'none'}{' (ring group)' if cfg.ring_group else ''}")
    store = device.open_store()
    try:
        calls = store.recent_events(CALL_EVENT, limit=args.last)
    except StoreUnavailable as exc:
        print(f"last calls: cannot read the store ({exc})", file=sys.stderr)
        return 1
    finally:
        store.close()
    if not calls:
        print("last calls: none yet")
    for row in calls:
        data = row["data"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.get("ts_wall") or 0))
        extra = ", door opened" if data.get("door_opened") else ""
        print(f"{when}  {data.get('result'):<9}  {data.get('target') or '-'}  {data.get('duration_s') or 0:.0f} s"
              f"{extra}  (event {row['event_id']})")
    return 0


def cmd_call(args) -> int:
    device = CliDevice(args)
    cfg = device.config["sip"]
    if not cfg.registrar or not cfg.username:
        print("edge sip call: set [sip] registrar and username first (see README, Intercom)", file=sys.stderr)
        return 2
    host = cfg.listen.rpartition(":")[0]
    # Its own SIP port and control port: the running device keeps its own.
    own = SectionValues("sip", {**dict(cfg), "listen": f"{host}:{free_sip_port()}", "control_port": 0},
                        {"password": cfg.secret("password")} if cfg.secret("password") else {})
    with tempfile.TemporaryDirectory(prefix="edge-sip-call-") as tmp:
        backend = BaresipBackend(own, own.secret("password"), Path(tmp), logging.getLogger("edge.sip.cli"),
                                 register=False)
        try:
            backend.start()
        except BackendError as exc:
            print(f"edge sip call: {exc}", file=sys.stderr)
            return 1
        try:
            summary = _call(backend, target_uri(args.target, own), own, args.talk)
        finally:
            backend.stop(5.0, unregister=False)
    print(f"{summary['result']}{' (' + str(summary['code']) + ')' if summary.get('code') else ''}: "
          f"{summary.get('target')}, talked {summary.get('duration_s') or 0:.1f} s"
          + (f" - {summary['reason']}" if summary.get("reason") and summary["result"] != "answered" else ""))
    return 0 if summary["result"] == "answered" else 1


def _call(backend: BaresipBackend, uri: str, cfg, talk_s: float) -> dict:
    settings = CallSettings((uri,), ring_timeout_s=cfg.ring_timeout_s, max_talk_s=max(talk_s, 0.1))
    clock = SYSTEM_CLOCK
    call = DoorCall("cli", settings, clock.monotonic())
    pending = call.start(clock.monotonic())
    deadline = clock.monotonic() + cfg.ring_timeout_s + talk_s + 30
    while clock.monotonic() < deadline:
        for action in pending:
            if isinstance(action, Dial):
                try:
                    call.on_dialed(action.uri, backend.dial(action.uri))
                except BackendError as exc:
                    pending = call.on_dial_failed(action.uri, str(exc), clock.monotonic())
                    break
            elif isinstance(action, Hangup):
                try:
                    backend.hangup(action.uri, action.call_id)
                except BackendError:
                    pass
            elif isinstance(action, Finished):
                return action.summary
        else:
            pending = []
        event = backend.next_event(0.05)
        if isinstance(event, BackendGone):
            return call.abandon(clock.monotonic(), event.reason)[0].summary
        if isinstance(event, CallEvent):
            pending += call.on_event(event, clock.monotonic())
        elif isinstance(event, LineEvent):
            pass  # a test call needs no registration: the PBX authenticates the INVITE itself
        pending += call.tick(clock.monotonic())
    return {"result": "failed", "reason": "no result in time", "target": uri}




def register_sip(subparsers, add_device_args) -> None:
    p = subparsers.add_parser("sip", help="the SIP intercom: status, test call",
                              description="the SIP intercom: status, test call")
    sub = p.add_subparsers(dest="sip_command", required=True)
    status = sub.add_parser("status", help="registration and the last calls", description="registration and the "
                            "last calls")
    add_device_args(status)
    status.add_argument("--last", type=int, default=5, metavar="N", help="how many calls to show (default 5)")
    status.set_defaults(func=cmd_status)
    call = sub.add_parser("call", help="a test call with the device's account; exit 0 when answered",
                          description="a test call with the device's account; exit 0 when answered")
    add_device_args(call)
    call.add_argument("target", help="an extension (**610) or a SIP URI")
    call.add_argument("--talk", type=float, default=2.0, metavar="SECONDS",
                      help="hang up this long after the answer (default 2)")
    call.set_defaults(func=cmd_call)


def cmd_sim_sip(args) -> int:
    return CliDevice(args).post_sim("sip", {})


def register_sim(sub, add_device_args) -> None:
    """`edge sim sip`: the simulated device's line and call state (--sim is implied)."""
    p = sub.add_parser("sip", help="the intercom of the running simulator: line, call state, last call",
                       description="the intercom of the running simulator: line, call state, last call")
    add_device_args(p)
    p.set_defaults(func=cmd_sim_sip, sim=True)
