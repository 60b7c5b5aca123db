"""Samples the system readings on an interval into the in-memory state board (never the
store: an idle device must not wear its SD card)."""

from __future__ import annotations

from pathlib import Path

from edge.config import Key, Section
from edge.worker import Worker, WorkerContext
from services.system.readings import Roots, read_all

SECTION = Section("system", (
    Key("enabled", bool, True, "sample CPU temperature, throttling, load, memory, disk"),
    Key("interval_s", float, 30.0, "seconds between samples", min=1),
    Key("sys_root", str, "/sys", "root of sysfs (tests point it at recorded files)"),
    Key("proc_root", str, "/proc", "root of procfs (tests point it at recorded files)"),
    Key("disk_path", str, "", "filesystem whose usage is reported (default: the state directory)"),
), "the device's vital signs")


class SystemWorker(Worker):
    name = "system"
    sections = (SECTION,)
    start_order = 40
    heartbeat_timeout_s = 30.0

    def run(self, ctx: WorkerContext) -> None:
        cfg = ctx.config
        roots = Roots(Path(cfg.sys_root), Path(cfg.proc_root))
        runtime = ctx.services.get("runtime")
        disk = Path(cfg.disk_path) if cfg.disk_path else getattr(runtime, "state_dir", Path("/"))
        while True:
            ctx.states.set("system", read_all(roots, disk))
            if ctx.sleep(cfg.interval_s):
                return
