"""Boot counter for safe mode (as ESPHome does): each start increments a counter in the
state directory; a minute of health, or a clean stop, clears it. After `threshold` quick
failed boots in a row the runtime starts only essential workers instead of crash-looping.

The worker whose failure ended a boot (a critical worker past its restart intensity) is
recorded beside the counter (`boot-cause`), so safe mode can leave that one out and say
why in health and Home Assistant. `edge safe-mode clear` clears both."""

from __future__ import annotations

import json
from pathlib import Path

from edge.config import Key, Section

SECTION = Section("safe_mode", (
    Key("boot_threshold", int, 3, "quick failed boots in a row before safe mode", min=1),
    Key("healthy_after_s", float, 60.0, "how long a boot must stay healthy to count as good", min=1),
), "safe mode after repeated failed boots")


class BootCounter:
    def __init__(self, path: Path):
        self.path = path
        self.cause_path = path.with_name("boot-cause")

    def read(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def begin_boot(self) -> int:
        """Count this boot; returns how many boots before it failed quickly in a row."""
        previous = self.read()
        self._write(previous + 1)
        return previous

    def clear(self) -> None:
        self._write(0)
        self.cause_path.unlink(missing_ok=True)

    def blame(self, worker: str, reason: str) -> None:
        """Record which worker ended this boot, and why."""
        self.cause_path.write_text(json.dumps({"worker": worker, "reason": reason}) + "\n")

    def cause(self) -> dict | None:
        """{"worker": ..., "reason": ...} of the last failed boot that recorded one."""
        try:
            cause = json.loads(self.cause_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cause if isinstance(cause, dict) and isinstance(cause.get("worker"), str) else None

    def _write(self, n: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{n}\n")
        tmp.replace(self.path)
