"""The `edge` command: run, status, config check, audit verify, doctor, and what workers
contribute through entry points: their own command groups (`edge.cli`, e.g. `edge faces`)
and simulator controls under `edge sim` (`edge.sim`, e.g. `edge sim press`). Each such
entry point is `register(subparsers, add_device_args)`; finding the device (config, state
directory, store, endpoint) is edge.cli_device's job."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from edge import __version__
from edge.cli_device import CliDevice, add_device_args
from edge.config import ConfigError
from edge.runtime import EXIT_NO_CONFIG, run


def cmd_run(args) -> int:
    return run(args.config, args.sim)


def cmd_status(args) -> int:
    code, body = CliDevice(args).request("GET", "/health")
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
    try:
        config, _ = CliDevice(args).load()
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_NO_CONFIG
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.source}: ok (profile {config.profile}, {len(config.sections)} sections)")
    return 0


def cmd_doctor(args) -> int:
    from edge.doctor import run_doctor  # imports every worker's checks: only for this command

    return run_doctor(CliDevice(args), as_json=args.json)


def cmd_safe_mode_clear(args) -> int:
    """Forget the failed boots, so the next start is a normal one."""
    from edge.safemode import BootCounter

    device = CliDevice(args)
    counter = BootCounter(device.state_dir / "boot-count")
    failed, cause = counter.read(), counter.cause()
    try:
        counter.clear()
    except OSError as exc:
        print(f"cannot clear the boot counter in {device.state_dir} ({exc.strerror}); run as the device's user "
              f"(sudo -u edge ...) or set EDGE_STATE_DIR", file=sys.stderr)
        return 1
    why = f" (the last ended by {cause['worker']}: {cause['reason']})" if cause else ""
    print(f"cleared {failed} failed boot(s){why} in {device.state_dir}; restart the service to leave safe mode "
          f"(sudo systemctl restart edge)")
    return 0


def cmd_audit_verify(args) -> int:
    """Read-only: opens the store without migrating it and never creates a key, so
    checking a log cannot change it (or the evidence). The state directory comes from
    EDGE_STATE_DIR / --sim, as for `edge run`; the key from the config's [audit] key_file."""
    import sqlite3

    from edge.audit import AuditLog
    from edge.store import DB_NAME, Store, StoreUnavailable

    device = CliDevice(args)
    state_dir = device.state_dir
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
        report = AuditLog(store, device.key_path(), state_dir / "audit.anchor", create_key=False).verify()
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


def _command(subparsers, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line help is also what its own --help says it does."""
    return subparsers.add_parser(name, help=text, description=text)


def _device_command(sub, group: tuple[str, str], command: tuple[str, str], func) -> argparse.ArgumentParser:
    """`edge GROUP COMMAND [--config F] [--sim]`, e.g. `edge audit verify`."""
    commands = _command(sub, *group).add_subparsers(dest=f"{group[0].replace('-', '_')}_command", required=True)
    p = _command(commands, *command)
    add_device_args(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Edge appliance runtime (doorbell, intercom, "
                                     "printer, inventory) reporting to Home Assistant over MQTT.")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "run", "run the device (Ctrl-C or SIGTERM stops it)")
    add_device_args(p)
    p.set_defaults(func=cmd_run)

    p = _command(sub, "status", "show the running device's health as a table")
    add_device_args(p)
    p.set_defaults(func=cmd_status)

    _device_command(sub, ("config", "configuration tools"),
                    ("check", "validate the config; non-zero exit with what to fix"), cmd_config_check)
    _device_command(sub, ("audit", "audit log tools"),
                    ("verify", "check the audit log's hash chain and anchor"), cmd_audit_verify)
    _device_command(sub, ("safe-mode", "safe mode after repeated failed boots"),
                    ("clear", "forget the failed boots; the next start is a normal one"), cmd_safe_mode_clear)

    p = _command(sub, "doctor", "check an installed device: config, hardware, broker, disk, clock")
    add_device_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per check, for scripts")
    p.set_defaults(func=cmd_doctor)

    p = _command(sub, "sim", "drive a running `edge run --sim` (press the button, swap the camera, ...)")
    sim = p.add_subparsers(dest="sim_command", required=True)
    for ep in entry_points(group="edge.sim"):
        ep.load()(sim, add_device_args)

    for ep in entry_points(group="edge.cli"):
        ep.load()(sub, add_device_args)
    return parser


DEVICE_FLAGS, DEVICE_OPTIONS = ("--sim",), ("--config",)


def device_options_last(argv: list[str]) -> list[str]:
    """`--sim` and `--config FILE` moved behind every positional, so they work wherever a
    person types them (`edge sim camera show --sim PHOTO`): argparse would otherwise end a
    subcommand's optional positional at them and refuse the rest."""
    rest, moved, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in DEVICE_FLAGS or any(arg.startswith(f"{o}=") for o in DEVICE_OPTIONS):
            moved.append(arg)
        elif arg in DEVICE_OPTIONS and i + 1 < len(argv):
            moved += argv[i:i + 2]
            i += 1
        elif arg == "--":
            rest += argv[i:]
            break
        else:
            rest.append(arg)
        i += 1
    return rest + moved


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(device_options_last(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
