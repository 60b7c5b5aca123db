"""Logging to stdout: JSON lines for journald (time, level, worker, component, event_id and
message), or one readable line each when a person watches a terminal (`[logging] format`). The worker and event_id come from context variables that the
supervisor and the event handlers set, so call sites stay plain `log.info(...)`.

Repeated warnings and errors are rate-limited (`RepeatLimiter`): a flood of the same
refusal must not write megabytes to an SD card; what was held back is counted on the next
line of that kind that passes."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable

current_worker: contextvars.ContextVar[str | None] = contextvars.ContextVar("worker", default=None)
current_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "worker": getattr(record, "worker", None) or current_worker.get(),
            "component": record.name,
            "event_id": getattr(record, "event_id", None) or current_event_id.get(),
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class RepeatLimiter(logging.Filter):
    """Lets at most `burst` warnings or errors with the same message template from the same
    logger through per `window_s` seconds (monotonic time); the rest are dropped and
    counted, and the first such line after the window carries `suppressed` (how many were
    held back). Info and debug lines pass untouched. Remembers at most `max_keys` kinds."""

    def __init__(self, burst: int = 5, window_s: float = 60.0, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.window_s, self.max_keys, self._clock = burst, window_s, max_keys, clock
        self._seen: OrderedDict[tuple[str, str], list] = OrderedDict()  # key → [window start, passed, held back]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window_s:
                held_back = entry[2] if entry else 0
                entry = self._seen[key] = [now, 0, 0]
                if held_back:
                    record.suppressed = held_back
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            if entry[1] < self.burst:
                entry[1] += 1
                return True
            entry[2] += 1
            return False


class TextFormatter(logging.Formatter):
    """One line a person reads on a terminal: time, level, worker or component, message,
    and the event id when there is one; a traceback follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        who = getattr(record, "worker", None) or current_worker.get() or record.name
        event_id = getattr(record, "event_id", None) or current_event_id.get()
        line = (f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {who}: "
                f"{record.getMessage()}" + (f"  [{event_id}]" if event_id else ""))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def wants_text(stream, fmt: str = "auto") -> bool:
    """Text for a person at a terminal; JSON for the journal (systemd sets JOURNAL_STREAM)
    and for anything else that reads the output."""
    if fmt != "auto":
        return fmt == "text"
    isatty = getattr(stream, "isatty", lambda: False)
    return bool(isatty()) and not os.environ.get("JOURNAL_STREAM")


def setup(level: str = "info", stream=None, fmt: str = "auto") -> None:
    stream = stream or sys.stdout
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if wants_text(stream, fmt) else JsonFormatter())
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_edge", False):
            root.removeHandler(h)
    handler._edge = True
    root.addHandler(handler)
    root.setLevel(level.upper())
