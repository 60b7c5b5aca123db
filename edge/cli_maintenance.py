"""`edge update FILE|URL|--status|--requested|--boot-check`, `edge rollback`, `edge backup FILE`
and `edge restore FILE` (through the `edge.cli` entry point). Each finds the device the way
every command does (edge.cli_device: config, state directory), the release layout under
`EDGE_PREFIX` (/opt/edge) and the service through `EDGE_SERVICE_CONTROL` (systemctl).
`--json` prints one JSON object for scripts; progress goes to stderr.

Not responsible for: the work itself (edge.update, edge.backup).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edge.cli_device import CliDevice
from edge.releases import ReleaseError, ReleaseLayout, prefix_for
from edge.service_control import ServiceControl, ServiceControlError

LARGE_BYTES = 1 << 20  # progress is shown for work larger than this (and always on a terminal)
# What image/install.sh adds to a release when the device recognises faces ([faces] and
# [doorbell] enabled): no dependency of the wheel (dlib-bin ships dlib prebuilt, and pip does
# not count it as face-recognition's `dlib`), so a wheel update installs them beside it, or the
# new release would answer healthy (DEGRADED) without face recognition and be committed.
FACE_PACKAGES = ("dlib-bin", "face_recognition_models")


class ByteProgress:
    """"copying the store: 40% (4.1 of 10.2 MB)" on stderr: redrawn in place on a terminal,
    a line per tenth otherwise (logs, CI); a step without a size is one line as it is."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last: tuple[str, int] | None = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if done == 0 and total == 0:  # a step without a size ("pip: Collecting ..."): as it is
            self._last = None
            self.stream.write(("\r\033[K" if self.tty else "") + what + "\n")
            self.stream.flush()
            return
        if total < LARGE_BYTES and not self.tty:
            return
        pct = 100 * done // total if total else 0
        step = pct if self.tty else pct // 10 * 10
        if self._last == (what, step):
            return
        self._last = (what, step)
        size = f" ({done / 1e6:.1f} of {total / 1e6:.1f} MB)" if total else f" ({done / 1e6:.1f} MB)"
        line = f"{what}: {pct}%{size}"
        self.stream.write(("\r\033[K" + line + ("\n" if done >= total else "")) if self.tty else line + "\n")
        self.stream.flush()


def _say(args, data: dict, text: str, code: int = 0) -> int:
    print(json.dumps(data) if args.json else text, file=sys.stdout if code == 0 or args.json else sys.stderr)
    return code


def _failed(args, what: str, exc: Exception) -> int:
    hint = "; run it as root (sudo edge ...)" if isinstance(exc, PermissionError) else ""
    return _say(args, {"ok": False, "error": f"{exc}{hint}"}, f"edge {what}: {exc}{hint}", 1)


def _updater(args, device: CliDevice, layout: ReleaseLayout):
    from edge.update import HealthProbe, Updater

    cfg = device.config["update"]
    return Updater(layout, device.state_dir, ServiceControl.from_env(), HealthProbe(device.health_candidates),
                   deadline_s=args.deadline if args.deadline is not None else cfg.deadline_s,
                   settle_s=args.settle if args.settle is not None else cfg.settle_s,
                   keep=cfg.keep_releases, pip_args=cfg.pip_args, wheel_packages=_wheel_packages(device.config),
                   on_step=(lambda step: None) if args.json else (lambda step: print(f"  {step}", file=sys.stderr)),
                   progress=None if args.json else ByteProgress())


def _wheel_packages(config) -> list[str]:
    def enabled(section: str) -> bool:
        return section in config.sections and bool(config[section].get("enabled"))

    return list(FACE_PACKAGES) if enabled("faces") and enabled("doorbell") else []


def _report(args, outcome) -> int:
    if outcome.outcome == "committed":
        text = f"updated {outcome.previous} -> {outcome.version}: ready and healthy, committed"
    else:
        text = f"update to {outcome.version} ROLLED BACK: {outcome.reason}" + (
            "; the store was put back as it was before the update" if outcome.store_restored else "")
    return _say(args, {"ok": outcome.outcome == "committed", **outcome.as_dict()}, text,
                0 if outcome.outcome == "committed" else 1)


def cmd_update(args) -> int:
    from edge.update import recover, read_result

    device = CliDevice(args)
    layout = ReleaseLayout(prefix_for())
    if args.status:
        return _status(args, layout, read_result(device.state_dir))
    if args.boot_check:
        try:
            back = None if layout.updater_running() else recover(layout, device.state_dir, "the device booted "
                                                                                           "mid-update")
        except OSError as exc:
            return _failed(args, "update --boot-check", exc)
        return _say(args, {"ok": True, "rolled_back_to": back},
                    f"rolled back to {back}: an uncommitted release was found" if back else "nothing to do")
    source, sha256 = args.source, args.sha256
    request_path = None
    if args.requested:
        from edge.update_entity import REQUEST_FILE, release_from_feed

        request_path = device.state_dir / REQUEST_FILE
        try:
            requested = json.loads(request_path.read_text())["version"]
        except OSError:
            return _say(args, {"ok": True, "requested": None}, f"no update requested ({request_path})")
        except (ValueError, KeyError, TypeError):  # removed, or edge-update.path would start us again and again
            request_path.unlink(missing_ok=True)
            return _say(args, {"ok": False, "error": "malformed request"},
                        f"edge update: {request_path} is not a request ({{\"version\": ...}}); removed it", 1)
        try:
            # what to install comes from the feed in the root-owned config, never from the
            # request: the unprivileged service that wrote it must not choose what root installs
            source, sha256 = release_from_feed(device.config["update"].feed_url, requested)
        except ReleaseError as exc:
            request_path.unlink(missing_ok=True)
            return _failed(args, "update --requested", exc)
    if not source:
        return _say(args, {"ok": False, "error": "nothing to install"},
                    "edge update: give a release archive, a wheel or a URL (or --status)", 2)
    try:
        outcome = _updater(args, device, layout).update(source, sha256)
    except (ReleaseError, ServiceControlError, OSError) as exc:
        return _failed(args, "update", exc)
    finally:
        if request_path is not None:
            request_path.unlink(missing_ok=True)
    return _report(args, outcome)


def _status(args, layout: ReleaseLayout, result: dict) -> int:
    state = layout.state()
    current, committed = layout.current(), layout.committed()
    # a record left by an update killed before its switch is stale: nothing is on trial
    pending = state.get("pending") if current != committed or layout.updater_running() else None
    rows = [{"version": v, "current": v == current, "committed": v == committed, "previous": v == state.get("previous")}
            for v in layout.versions()]
    data = {"prefix": str(layout.prefix), "current": current, "committed": committed, "pending": pending,
            "releases": rows, "last": result or state.get("last")}
    if args.json:
        print(json.dumps(data))
        return 0
    if not rows:
        print(f"no releases under {layout.prefix} (EDGE_PREFIX); install with image/install.sh")
        return 0
    for r in rows:
        flags = ", ".join(k for k in ("current", "committed", "previous") if r[k])
        print(f"{r['version']:<20} {flags}")
    if current != committed:
        print(f"release {current} is on trial (not committed): an update is running, or was interrupted and is "
              f"rolled back at the next start (or now with `edge update --boot-check`)")
    last = data["last"]
    if last:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.get("wall", 0)))
        print(f"last update ({when}): {last.get('outcome')} {last.get('version')}"
              + (f": {last['reason']}" if last.get("reason") else ""))
    return 0


def cmd_rollback(args) -> int:
    device = CliDevice(args)
    layout = ReleaseLayout(prefix_for())
    try:
        outcome = _updater(args, device, layout).rollback()
    except (ReleaseError, ServiceControlError, OSError) as exc:
        return _failed(args, "rollback", exc)
    if outcome.outcome == "committed":
        text = f"rolled back {outcome.previous} -> {outcome.version}: ready and healthy, committed" + (
            "; the store was put back as it was before the update to the newer release" if outcome.store_restored
            else "")
        return _say(args, {"ok": True, **outcome.as_dict()}, text)
    return _report(args, outcome)


def _sources(device: CliDevice):
    from edge.backup import sources_for

    config, classes = device.load()
    return sources_for(config, classes, device.state_dir, device.config_path), classes


def cmd_backup(args) -> int:
    from edge.backup import BackupError, create_backup

    device = CliDevice(args)
    sources, _ = _sources(device)
    target = Path(args.file)
    try:
        manifest = create_backup(sources, target, with_secrets=args.with_secrets,
                                 progress=None if args.json else ByteProgress())
    except (BackupError, OSError) as exc:
        return _failed(args, "backup", exc)
    size = target.stat().st_size
    secrets = "with secrets (keep it safe)" if args.with_secrets else "without secrets"
    return _say(args, {"ok": True, "file": str(target), "bytes": size, **{k: manifest[k] for k in (
        "edge_version", "node", "schema", "with_secrets", "created")}, "files": len(manifest["files"])},
                f"backup {target}: {len(manifest['files'])} files, {size / 1e6:.1f} MB, {secrets}; store schema "
                f"{manifest['schema']}; {device.describe()}")


def cmd_restore(args) -> int:
    from edge.assembly import store_schemas
    from edge.backup import BackupError, restore_backup
    from edge.store import CORE_SCHEMA

    device = CliDevice(args)
    sources, classes = _sources(device)
    known = {s.component: len(s.scripts) for s in [CORE_SCHEMA, *store_schemas(classes)]}
    try:
        manifest, notes = restore_backup(Path(args.file), sources, known, ServiceControl.from_env(),
                                         None if args.json else ByteProgress())
    except (BackupError, ServiceControlError, OSError) as exc:
        return _failed(args, "restore", exc)
    for note in notes if not args.json else ():
        print(f"note: {note}", file=sys.stderr)
    return _say(args, {"ok": True, "file": args.file, "notes": notes, **{k: manifest.get(k) for k in (
        "edge_version", "node", "schema", "created")}},
                f"restored {args.file} (made {manifest.get('created')} by edge {manifest.get('edge_version')}); the "
                f"previous state is kept in {device.state_dir / '.pre-restore'}; {device.describe()}")


def register(sub, add_device_args) -> None:
    def command(name: str, text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        add_device_args(p)
        p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
        p.set_defaults(func=func)
        return p

    p = command("update", "install a release and switch to it; rolled back unless it becomes ready and healthy",
                cmd_update)
    p.add_argument("source", nargs="?", metavar="FILE|URL", help="release archive (.tar.gz) or wheel (.whl), or "
                   "an http(s) URL of one")
    p.add_argument("--sha256", help="its SHA-256 (default: from FILE.sha256 beside it)")
    p.add_argument("--status", action="store_true", help="show the installed releases and which is committed")
    p.add_argument("--boot-check", action="store_true", help="roll back an uncommitted release left by a power cut "
                   "(for the unit's ExecStartPre=+)")
    p.add_argument("--requested", action="store_true", help="carry out the update Home Assistant asked for")
    for parser in (p, command("rollback", "go back to the release before the committed one, with the same checks",
                              cmd_rollback)):
        parser.add_argument("--deadline", type=float, metavar="S", help="seconds to become ready and healthy "
                            "(default: [update] deadline_s)")
        parser.add_argument("--settle", type=float, metavar="S", help="seconds it must then stay so "
                            "(default: [update] settle_s)")

    p = command("backup", "back up config, store, known faces and state into FILE (while the device runs)",
                cmd_backup)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--with-secrets", action="store_true", help="include secret files and the audit key")
    p = command("restore", "check a backup, stop the service, restore it, start the service", cmd_restore)
    p.add_argument("file", metavar="FILE")
