"""Commands that arrive from outside (Home Assistant buttons over MQTT, later the SIP DTMF
path): a registry of named handlers with a payload schema, so every command is validated
before use, refused when it is not authorized, and counted.

A handler is registered by the worker that owns it (`ctx.services["commands"].register`).
Commands that open the door or change who is known set `dangerous=True`: the registry
refuses them unless the caller passes `allow_dangerous=True`, which the MQTT link does only
when `[mqtt] allow_dangerous_commands = true` (default off). The owning worker may add its
own check with `authorized` (e.g. its own config switch).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("edge.commands")

MAX_PAYLOAD = 4096


class CommandRejected(Exception):
    """Why a command was refused; the text goes back on the response topic."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.code = code  # "malformed", "oversized", "unknown", "unauthorized", "invalid", "failed"


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[dict], Any]
    fields: dict[str, type]            # required payload fields and their types
    optional: dict[str, type] | None = None
    authorized: Callable[[], bool] | None = None  # None: always allowed
    refusal: str = ""                  # what to set to allow it, shown when refused
    dangerous: bool = False            # opens the door or changes who is known: refused unless allowed


class CommandRegistry:
    def __init__(self):
        self._commands: dict[str, Command] = {}
        self._lock = threading.Lock()
        self.accepted = Counter()
        self.rejected = Counter()  # by code

    def register(self, command: Command) -> None:
        with self._lock:
            self._commands[command.name] = command

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._commands)

    def reject(self, reason: str, code: str) -> CommandRejected:
        """Count and log a refusal; returns it (to raise, or to answer later)."""
        self.rejected[code] += 1
        log.warning("command rejected (%s): %s", code, reason)
        return CommandRejected(reason, code)

    def reject_oversized(self, size: int) -> CommandRejected:
        return self.reject(f"payload of {size} bytes is over the {MAX_PAYLOAD}-byte limit", "oversized")

    def parse(self, name: str, raw: bytes, *, allow_dangerous: bool = False,
              dangerous_hint: str = "") -> tuple[Command, dict]:
        """Validate a raw payload; raises CommandRejected (counted) with the reason.
        A `dangerous` command is refused unless `allow_dangerous`; `dangerous_hint` says
        what to set to allow it."""
        if len(raw) > MAX_PAYLOAD:
            raise self.reject_oversized(len(raw))
        with self._lock:
            command = self._commands.get(name)
        if command is None:
            raise self.reject(f"unknown command {name!r}; known: {', '.join(self.names())}", "unknown")
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise self.reject(f"payload is not JSON ({exc})", "malformed") from None
        if not isinstance(payload, dict):
            raise self.reject("payload must be a JSON object", "malformed")
        allowed = dict(command.fields) | dict(command.optional or {})
        for key, typ in command.fields.items():
            if key not in payload:
                raise self.reject(f"{name}: missing field {key!r}", "invalid")
        for key, value in payload.items():
            if key not in allowed:
                raise self.reject(f"{name}: unknown field {key!r}; allowed: {', '.join(allowed) or 'none'}",
                                   "invalid")
            if not isinstance(value, allowed[key]) or (allowed[key] is not bool and isinstance(value, bool)):
                raise self.reject(f"{name}: field {key!r} must be {allowed[key].__name__}", "invalid")
        if command.dangerous and not allow_dangerous:
            raise self.reject(f"{name} opens the door or changes who is known and is refused by default; "
                               f"{dangerous_hint or command.refusal or 'enable it in the config'}", "unauthorized")
        if command.authorized is not None and not command.authorized():
            raise self.reject(f"{name} is not enabled on this device; {command.refusal}", "unauthorized")
        return command, payload

    def execute(self, name: str, raw: bytes, *, allow_dangerous: bool = False, dangerous_hint: str = "") -> Any:
        command, payload = self.parse(name, raw, allow_dangerous=allow_dangerous, dangerous_hint=dangerous_hint)
        try:
            result = command.handler(payload)
        except CommandRejected as exc:
            self.rejected[exc.code] += 1
            raise
        except Exception as exc:  # a failing handler must not take the caller (the MQTT loop) down
            log.exception("command %s failed", name)
            raise self.reject(f"{name} failed: {exc}", "failed") from exc
        self.accepted[name] += 1
        return result
