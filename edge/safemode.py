"""Boot counter for safe mode (as ESPHome does): each start increments a counter in the
state directory; a minute of health, or a clean stop, clears it. After `threshold` quick
failed boots in a row the runtime starts only essential workers instead of crash-looping."""

from __future__ import annotations

from pathlib import Path

from edge.config import Key, Section

SECTION = Section("safe_mode", (
    Key("boot_threshold", int, 3, "quick failed boots in a row before safe mode", min=1),
    Key("healthy_after_s", float, 60.0, "how long a boot must stay healthy to count as good", min=1),
), "safe mode after repeated failed boots")


class BootCounter:
    def __init__(self, path: Path):
        self.path = path

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

    def _write(self, n: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{n}\n")
        tmp.replace(self.path)
