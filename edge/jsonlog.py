"""JSON-lines logging to stdout (journald keeps it): time, level, worker, component,
event_id and message. The worker and event_id come from context variables that the
supervisor and the event handlers set, so call sites stay plain `log.info(...)`."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

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


def setup(level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_edge", False):
            root.removeHandler(h)
    handler._edge = True
    root.addHandler(handler)
    root.setLevel(level.upper())
