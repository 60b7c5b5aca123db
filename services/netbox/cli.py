"""`edge netbox sync [--dry-run]`: one sync from the command line, in this process (as
netbox-agent runs), printing the planned or made changes as a readable diff (object,
field: old → new). With --dry-run nothing is written.

The peripherals are those the running device saw at its last successful sync (kept in the
store); when there is none, inventory items are left alone rather than marked stale.

Not responsible for: the sync itself (sync.py), finding the device's config (edge.cli_device).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from edge.cli_device import CliDevice
from services.netbox import client
from services.netbox.facts import read_facts
from services.netbox.matching import Conflict
from services.netbox.sync import MissingPrerequisites, Rejected, Sync
from services.netbox.worker import load_last_sync, stored_peripherals


def cmd_sync(args, root: Path = Path("/")) -> int:
    device = CliDevice(args)
    config = device.config
    cfg = config["netbox"]
    token = cfg.secret("token")
    if not cfg.url or not token or not cfg.site:
        print("edge netbox sync: set [netbox] url, site and token_file (or EDGE_NETBOX_URL, EDGE_NETBOX_SITE, "
              "EDGE_NETBOX_TOKEN) first", file=sys.stderr)
        return 2
    if not cfg.enabled:
        print("note: [netbox] enabled = false: the device does not sync by itself", file=sys.stderr)
    try:
        store = device.open_store()
    except SystemExit as exc:  # no store here (another user's device): no cached id, no peripherals
        print(f"note: {exc}; matching by serial and name, inventory items left alone", file=sys.stderr)
        store = None
    try:
        last = load_last_sync(store)
    finally:
        if store is not None:
            store.close()
    facts = read_facts(root)
    facts = type(facts)(**{**facts.__dict__, "peripherals": stored_peripherals(last)})
    api = client.make_api(cfg, token)
    run_id = "cli-" + uuid.uuid4().hex[:8]
    try:
        version = client.check_version(api)
        result = Sync(api, cfg, facts, run_id=run_id, node=config["node"].id, dry_run=args.dry_run,
                      cached_device_id=(last or {}).get("device_id")).run()
    except (Conflict, MissingPrerequisites, Rejected, client.UnsupportedVersion) as exc:
        print(f"edge netbox sync: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - what NetBox's answer means, or a bug re-raised
        failure = client.classify(exc)
        if failure is None:
            raise
        print(f"edge netbox sync: {failure.message}", file=sys.stderr)
        return 1
    finally:
        api.http_session.close()
    print(result.diff())
    for note in result.notes:
        print(f"note: {note}")
    done = "dry run: nothing written" if args.dry_run else f"{len(result.changes)} change(s) written"
    print(f"{done} (NetBox {cfg.url}, API {version}, run {run_id})")
    return 0


def register_netbox(subparsers, add_device_args) -> None:
    p = subparsers.add_parser("netbox", help="NetBox sync: sync now, or show what a sync would change",
                              description="NetBox sync: sync now, or show what a sync would change")
    sub = p.add_subparsers(dest="netbox_command", required=True)
    sync = sub.add_parser("sync", help="sync this node into NetBox now and print the changes",
                          description="sync this node into NetBox now and print the changes (object, field: "
                                      "old → new)")
    add_device_args(sync)
    sync.add_argument("--dry-run", action="store_true", help="print the planned changes, write nothing")
    sync.set_defaults(func=cmd_sync)
