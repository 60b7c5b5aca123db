"""Alert thresholds with hysteresis over the system readings: CPU temperature, disk, memory
and under-voltage, each a `problem` binary sensor in Home Assistant.

A numeric alert turns on at its threshold and off only below a lower clear level, so a
value hovering at the threshold does not flap. The under-voltage flag is a yes/no reading,
so its hysteresis is in time: it clears only after `under_voltage_clear_s` without one.

Reads the `system` state-board value (a dict, written by the system worker); writes
`alert.<name>` values ({"problem": "ON"/"OFF", "value", "threshold", "clear_below"}).
Not responsible for sampling (the system worker) or publishing (the MQTT link).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import Key, Section
from edge.entities import Entity

SOURCE_STATE = "system"  # the state-board key the readings come from
SOURCE_WORKER = "system"  # the worker that writes it: the alerts are available while it runs


def _check(config, problems: list[str], warnings: list[str]) -> None:
    cfg = config["alerts"]
    for name in ("cpu_temp_c", "disk_used_pct", "memory_used_pct"):
        if cfg[f"{name}_clear"] >= cfg[name]:
            problems.append(f"[alerts] {name}_clear ({cfg[f'{name}_clear']:g}) must be below {name} "
                            f"({cfg[name]:g}) so the alert does not flap; for example: {name} = "
                            f"{cfg[name]:g}, {name}_clear = {cfg[name] - 5:g}")


SECTION = Section("alerts", (
    Key("cpu_temp_c", float, 80.0, "CPU temperature that raises the alert (a Pi throttles at 80-85 °C)"),
    Key("cpu_temp_c_clear", float, 75.0, "temperature below which it clears"),
    Key("disk_used_pct", float, 90.0, "disk use that raises the alert", min=1, max=100),
    Key("disk_used_pct_clear", float, 85.0, "disk use below which it clears", min=0, max=100),
    Key("memory_used_pct", float, 90.0, "memory use that raises the alert", min=1, max=100),
    Key("memory_used_pct_clear", float, 85.0, "memory use below which it clears", min=0, max=100),
    Key("under_voltage_clear_s", float, 60.0, "seconds without under-voltage before its alert clears", min=0),
), "problem alerts over the system readings, shown in Home Assistant", checks=(_check,))


@dataclass(frozen=True)
class Threshold:
    name: str        # alert.<name> on the state board, and the entity's object id
    label: str       # the entity's name in Home Assistant
    field: str       # the reading's key in the `system` dict
    on: float
    clear: float


class Alerts:
    def __init__(self, thresholds: list[Threshold], under_voltage_clear_s: float = 60.0):
        self.thresholds = thresholds
        self.under_voltage_clear_s = under_voltage_clear_s
        self._on: dict[str, bool] = {}
        self._last_under_voltage: float | None = None

    @classmethod
    def from_config(cls, cfg) -> "Alerts":
        return cls([
            Threshold("cpu_temperature", "CPU temperature high", "cpu_temp_c", cfg.cpu_temp_c, cfg.cpu_temp_c_clear),
            Threshold("disk", "Disk almost full", "disk_used_pct", cfg.disk_used_pct, cfg.disk_used_pct_clear),
            Threshold("memory", "Memory almost full", "memory_used_pct", cfg.memory_used_pct,
                      cfg.memory_used_pct_clear),
        ], cfg.under_voltage_clear_s)

    def entities(self) -> list[Entity]:
        names = [(t.name, t.label) for t in self.thresholds] + [("under_voltage", "Under-voltage")]
        return [Entity("binary_sensor", f"alert_{name}", label, state=f"alert.{name}",
                       value_template="{{ value_json.problem }}", attributes=f"alert.{name}",
                       device_class="problem", entity_category="diagnostic") for name, label in names]

    def evaluate(self, reading: dict, now: float) -> dict[str, dict]:
        """New `alert.<name>` values for a reading at monotonic time `now`. A reading without
        a field leaves that alert as it was (a laptop has no throttling flags)."""
        out = {}
        for t in self.thresholds:
            value = reading.get(t.field)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            was = self._on.get(t.name, False)
            on = value >= t.on if not was else value >= t.clear
            self._on[t.name] = on
            out[f"alert.{t.name}"] = {"problem": "ON" if on else "OFF", "value": value, "threshold": t.on,
                                      "clear_below": t.clear}
        if "under_voltage" in reading:
            if reading["under_voltage"]:
                self._last_under_voltage = now
            on = bool(reading["under_voltage"]) or (self._last_under_voltage is not None
                                                    and now - self._last_under_voltage < self.under_voltage_clear_s)
            out["alert.under_voltage"] = {"problem": "ON" if on else "OFF", "value": bool(reading["under_voltage"]),
                                          "clear_after_s": self.under_voltage_clear_s}
        return out
