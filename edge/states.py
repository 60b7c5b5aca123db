"""Periodic states (temperatures, load, printer progress): in memory only, latest value
wins, so an idle device writes nothing to the SD card. The MQTT link publishes changes and
re-publishes everything after a reconnect; events, which must not be lost, go through the
bus and the outbox instead."""

from __future__ import annotations

import threading
from typing import Any, Callable


class StateBoard:
    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._listeners: list[Callable[[str, Any], None]] = []

    def set(self, name: str, value: Any) -> None:
        with self._lock:
            if self._values.get(name) == value:
                return
            self._values[name] = value
            listeners = list(self._listeners)
        for listener in listeners:
            listener(name, value)

    def get(self, name: str, default: Any = None) -> Any:
        with self._lock:
            return self._values.get(name, default)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def listen(self, fn: Callable[[str, Any], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)
