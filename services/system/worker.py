"""Samples the system readings on an interval into the in-memory state board (never the
store: an idle device must not wear its SD card), and declares the Home Assistant sensors
that show them: all read one JSON state (`edge/<node>/state/system`), each picking its
field with a template. A field this machine does not have (a laptop has no throttling
flags) renders None, which Home Assistant shows as "unknown" rather than a wrong value.
The problem alerts over these readings live with the MQTT link (edge/mqtt/alerts.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from edge.config import Key, Section
from edge.entities import Entity
from edge.worker import Worker, WorkerContext
from services.system.readings import Roots, cpu_usage_pct, read_all

SECTION = Section("system", (
    Key("enabled", bool, True, "sample CPU temperature, throttling, load, memory, disk"),
    Key("interval_s", float, 30.0, "seconds between samples", min=1),
    Key("sys_root", str, "/sys", "root of sysfs (tests point it at recorded files)"),
    Key("proc_root", str, "/proc", "root of procfs (tests point it at recorded files)"),
    Key("disk_path", str, "", "filesystem whose usage is reported (default: the state directory)"),
), "the device's vital signs")


STATE = "system"  # the state-board key of the readings (edge/mqtt/alerts.py reads it too)


def _reading(object_id: str, name: str, field: str, **kw) -> Entity:
    return Entity("sensor", object_id, name, state=STATE, value_template=f"{{{{ value_json.get('{field}') }}}}",
                  entity_category="diagnostic", **kw)


class SystemWorker(Worker):
    name = "system"
    sections = (SECTION,)
    start_order = 40
    heartbeat_timeout_s = 30.0
    entities = (
        _reading("cpu_temperature", "CPU temperature", "cpu_temp_c", device_class="temperature", unit="°C",
                 state_class="measurement"),
        _reading("load_1m", "Load (1 min)", "load_1m", state_class="measurement", icon="mdi:gauge"),
        _reading("memory_used", "Memory used", "memory_used_pct", unit="%", state_class="measurement",
                 icon="mdi:memory"),
        _reading("disk_used", "Disk used", "disk_used_pct", unit="%", state_class="measurement",
                 icon="mdi:harddisk"),
        _reading("uptime", "Uptime", "uptime_s", device_class="duration", unit="s", state_class="total_increasing",
                 icon="mdi:timer-outline"),
        _reading("last_boot", "Last boot", "last_boot", device_class="timestamp", icon="mdi:restart"),
        _reading("ip_address", "IP address", "ip_address", icon="mdi:ip-network"),
        # unknown on a wired link, as ESPHome shows no "WiFi Signal" without Wi-Fi
        _reading("wifi_signal", "Wi-Fi signal", "wifi_signal_dbm", device_class="signal_strength", unit="dBm",
                 state_class="measurement"),
        _reading("cpu_usage", "CPU usage", "cpu_usage_pct", unit="%", state_class="measurement", icon="mdi:cpu-64-bit"),
        _reading("runtime_memory", "Runtime memory", "rss_mb", device_class="data_size", unit="MB",
                 state_class="measurement"),
        _reading("bytes_written", "Bytes written", "bytes_written", device_class="data_size", unit="B",
                 state_class="total_increasing", icon="mdi:content-save"),
        # The firmware's flags as they are now; the raw value and the "since boot" flags ride
        # along as attributes. (The under-voltage alert, with its quiet-spell hysteresis, is
        # the MQTT link's.)
        Entity("binary_sensor", "throttled", "Throttled", state=STATE, device_class="problem",
               entity_category="diagnostic", attributes=STATE,
               value_template="{{ None if value_json.get('throttled') is none "
                              "else ('ON' if value_json.throttled else 'OFF') }}"),
    )

    def run(self, ctx: WorkerContext) -> None:
        cfg = ctx.config
        roots = Roots(Path(cfg.sys_root), Path(cfg.proc_root))
        disk = Path(cfg.disk_path) if cfg.disk_path else (ctx.state_dir or Path("/"))
        previous = None
        while True:
            values = read_all(roots, disk)
            jiffies = values.pop("cpu_jiffies", None)
            values["cpu_usage_pct"] = cpu_usage_pct(previous, jiffies)
            previous = jiffies
            if "uptime_s" in values:  # shown as a time; the wall clock may still be unsynchronised
                values["last_boot"] = datetime.fromtimestamp(ctx.clock.wall() - values["uptime_s"],
                                                             timezone.utc).isoformat(timespec="seconds")
            ctx.states.set(STATE, values)
            if ctx.sleep(cfg.interval_s):
                return
