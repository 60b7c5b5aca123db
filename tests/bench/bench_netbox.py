"""Benchmark of the NetBox sync (prints JSON): HTTP requests, writes and bytes per sync for a
node with 4 interfaces and 5 peripherals against the fake NetBox (real HTTP on 127.0.0.1,
through pynetbox), for the first run (everything created), an unchanged run (goal: only
reads, and few of them) and a run after one address change. The first run is the baseline
measured in the same run: the other two are also given as ratios to it.

    python tests/bench/bench_netbox.py [--runs 5]

Needs NetBox's OpenAPI schema (EDGE_TEST_DATA, default ../shared/data).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from edge.config import build
from edge.testing.fake_netbox import FakeNetbox, Schema, openapi_path
from services.netbox.client import check_version, make_api
from services.netbox.facts import Facts, Interface, Peripheral
from services.netbox.sections import SECTION
from services.netbox.sync import Sync
from measures import bench_parser


def node(eth0: str) -> Facts:
    interfaces = (Interface("eth0", "DC:A6:32:01:02:03", (eth0, "2001:db8::10/64")),
                  Interface("eth1", "00:E0:4C:68:00:01", ("198.51.100.10/24",)),
                  Interface("wlan0", "DC:A6:32:01:02:04", ("192.0.2.11/24",), wireless=True),
                  Interface("usb0", "02:00:00:00:00:01", ()))
    peripherals = (Peripheral("camera", "camera", "Camera"), Peripheral("doorbell_button", "gpio", "Doorbell button"),
                   Peripheral("chime", "gpio", "Chime"), Peripheral("door_relay", "gpio", "Door relay"),
                   Peripheral("printer", "printer", "Printer", model="Prusa i3 MK3S", firmware="Prusa-Firmware 3.13.3",
                              port="/dev/serial/by-id/usb-Prusa_Research_Original_Prusa_i3_MK3-if00"))
    return Facts("front-door", "10000000a1b2c3d4", "10000000a1b2c3d4", "Raspberry Pi 4 Model B Rev 1.4",
                 "Raspberry Pi Ltd", "Debian GNU/Linux 12 (bookworm)", "0.1.0", interfaces, peripherals)


def measure(fake: FakeNetbox, api, cfg, facts: Facts, cached: int | None, run: str) -> tuple[dict, int]:
    fake.reset_counters()
    start = time.perf_counter()
    check_version(api)
    result = Sync(api, cfg, facts, run_id=run, node="front", cached_device_id=cached).run()
    elapsed = time.perf_counter() - start
    c = fake.counters
    return ({"requests": c.requests, "reads": c.by_method.get("GET", 0), "writes": c.writes,
             "objects_written": c.objects_written, "bytes_sent": c.bytes_in, "bytes_received": c.bytes_out,
             "changes": len(result.changes), "wall_ms": round(elapsed * 1000, 1)}, result.device_id)


def one_round(schema: Schema) -> dict:
    fake = FakeNetbox(schema).start()
    try:
        cfg = build([SECTION], {"netbox": {"enabled": True, "url": fake.url, "site": "home",
                                           "create_prerequisites": True}},
                    {"EDGE_NETBOX_TOKEN": fake.token}, "pi")["netbox"]
        api = make_api(cfg, cfg.secret("token"))
        first, device = measure(fake, api, cfg, node("192.0.2.10/24"), None, "first")
        unchanged, _ = measure(fake, api, cfg, node("192.0.2.10/24"), device, "unchanged")
        changed, _ = measure(fake, api, cfg, node("192.0.2.20/24"), device, "address")
        api.http_session.close()
        return {"first": first, "unchanged": unchanged, "after_address_change": changed}
    finally:
        fake.stop()


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="rounds (fresh fake NetBox each); wall times are medians")
    args = parser.parse_args()
    data = Path(os.environ.get("EDGE_TEST_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
    schema = Schema(openapi_path(data))
    rounds = [one_round(schema) for _ in range(args.runs)]
    out = {}
    for phase in rounds[0]:
        figures = dict(rounds[0][phase])
        figures["wall_ms"] = statistics.median(r[phase]["wall_ms"] for r in rounds)
        out[phase] = figures
    for phase in ("unchanged", "after_address_change"):
        out[phase]["vs_first"] = {k: round(out[phase][k] / out["first"][k], 3)
                                  for k in ("requests", "bytes_sent", "bytes_received", "wall_ms") if out["first"][k]}
    out["node"] = {"interfaces": 4, "peripherals": 5, "runs": args.runs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
