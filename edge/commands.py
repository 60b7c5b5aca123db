"""Commands: Home Assistant buttons over MQTT, and in-process callers (the intercom's DTMF
code, the CLI). A registry of named handlers with a payload schema, so every command is
validated before use, refused when it is not authorized, and counted, whoever calls it.

A handler is registered by the worker that owns it (`ctx.commands.register`) and removed
by the runtime when that worker's run ends; a call meanwhile is refused as "unavailable"
(the worker is restarting), not as unknown. Handlers are called as `handler(payload, via)`:
`via` says who asked ("mqtt", "sip", "cli", ...), set by the caller's transport and never
taken from the payload, so an MQTT sender cannot pass itself off as the intercom in the
audit log.

Commands that open the door or change who is known set `dangerous=True`: the registry
refuses them unless the caller passes `allow_dangerous=True`, which the MQTT link does only
when `[mqtt] allow_dangerous_commands = true` (default off) and an in-process caller only
under its own configured authorization (the intercom's DTMF code). The owning worker may add
its own check with `authorized` (e.g. its own config switch).
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
MAX_NESTING = 32  # no command needs more; a deeper payload would make json's parser recurse


def _nesting(raw: bytes) -> int:
    """The deepest [ / { nesting in `raw`, outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest
VIA_MQTT, VIA_SIP, VIA_CLI = "mqtt", "sip", "cli"


class CommandRejected(Exception):
    """Why a command was refused; the text goes back to the caller (MQTT: the result topic)."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        # "malformed", "oversized", "unknown", "unavailable", "unauthorized", "invalid", "failed"
        self.code = code


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[dict, str], Any]  # (payload, via)
    fields: dict[str, type]            # required payload fields and their types
    optional: dict[str, type] | None = None
    authorized: Callable[[], bool] | None = None  # None: always allowed
    refusal: str = ""                  # what to set to allow it, shown when refused
    dangerous: bool = False            # opens the door or changes who is known: refused unless allowed
    danger: str = "opens the door or changes who is known"  # what makes it dangerous, for the refusal


class CommandRegistry:
    def __init__(self):
        self._commands: dict[str, Command] = {}
        self._owners: dict[str, str] = {}  # command → worker that registered it (kept after removal)
        self._lock = threading.Lock()
        self.accepted = Counter()
        self.rejected = Counter()  # by code

    def register(self, command: Command, owner: str = "") -> None:
        with self._lock:
            self._commands[command.name] = command
            self._owners[command.name] = owner

    def unregister(self, command: Command) -> None:
        """Remove `command` if it is still the registered one (a newer run's is kept)."""
        with self._lock:
            if self._commands.get(command.name) is command:
                del self._commands[command.name]

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

    def _lookup(self, name: str) -> Command:
        with self._lock:
            command, owner = self._commands.get(name), self._owners.get(name)
        if command is not None:
            return command
        if owner is not None:
            raise self.reject(f"{name} is not available now: the {owner or 'owning'} worker is not running "
                              f"(restarting or stopped); try again in a few seconds", "unavailable")
        raise self.reject(f"unknown command {name!r}; known: {', '.join(self.names())}", "unknown")

    def parse(self, name: str, raw: bytes, *, allow_dangerous: bool = False,
              dangerous_hint: str = "") -> tuple[Command, dict]:
        """Validate a raw payload (MQTT); raises CommandRejected (counted) with the reason.
        A `dangerous` command is refused unless `allow_dangerous`; `dangerous_hint` says
        what to set to allow it."""
        if len(raw) > MAX_PAYLOAD:
            raise self.reject_oversized(len(raw))
        command = self._lookup(name)
        if _nesting(raw) > MAX_NESTING:  # json's parser recurses per level: refuse before it overflows
            raise self.reject(f"payload is nested more than {MAX_NESTING} levels deep", "malformed")
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise self.reject(f"payload is not JSON ({exc})", "malformed") from None
        return command, self._check(command, payload, allow_dangerous, dangerous_hint)

    def _check(self, command: Command, payload: Any, allow_dangerous: bool, dangerous_hint: str) -> dict:
        name = command.name
        if not isinstance(payload, dict):
            raise self.reject("payload must be a JSON object", "malformed")
        allowed = dict(command.fields) | dict(command.optional or {})
        for key in command.fields:
            if key not in payload:
                raise self.reject(f"{name}: missing field {key!r}", "invalid")
        for key, value in payload.items():
            if key not in allowed:
                raise self.reject(f"{name}: unknown field {key!r}; allowed: {', '.join(allowed) or 'none'}",
                                  "invalid")
            if not isinstance(value, allowed[key]) or (allowed[key] is not bool and isinstance(value, bool)):
                raise self.reject(f"{name}: field {key!r} must be {allowed[key].__name__}", "invalid")
        if command.dangerous and not allow_dangerous:
            raise self.reject(f"{name} {command.danger} and is refused by default; "
                              f"{dangerous_hint or command.refusal or 'enable it in the config'}", "unauthorized")
        if command.authorized is not None and not command.authorized():
            raise self.reject(f"{name} is not enabled on this device; {command.refusal}", "unauthorized")
        return payload

    def execute(self, name: str, raw: bytes, *, allow_dangerous: bool = False, dangerous_hint: str = "",
                via: str = VIA_MQTT) -> Any:
        """A command from the wire (raw JSON bytes, at most MAX_PAYLOAD)."""
        command, payload = self.parse(name, raw, allow_dangerous=allow_dangerous, dangerous_hint=dangerous_hint)
        return self._run(command, payload, via)

    def call(self, name: str, payload: dict | None = None, *, via: str, allow_dangerous: bool = False) -> Any:
        """A command from inside the process (the intercom opening the door, the CLI): the
        same size limit, schema check, authorization and counting as from MQTT, with `via`
        handed to the handler for its audit record."""
        payload = {} if payload is None else payload
        try:
            size = len(json.dumps(payload).encode())
        except (TypeError, ValueError) as exc:
            raise self.reject(f"payload is not JSON-serialisable ({exc})", "malformed") from None
        if size > MAX_PAYLOAD:
            raise self.reject_oversized(size)
        command = self._lookup(name)
        return self._run(command, self._check(command, payload, allow_dangerous, ""), via)

    def _run(self, command: Command, payload: dict, via: str) -> Any:
        try:
            result = command.handler(payload, via)
        except CommandRejected as exc:
            self.rejected[exc.code] += 1
            raise
        except Exception as exc:  # a failing handler must not take the caller (the MQTT loop) down
            log.exception("command %s failed", command.name)
            raise self.reject(f"{command.name} failed: {exc}", "failed") from exc
        self.accepted[command.name] += 1
        return result


class WorkerCommands:
    """A worker's view of the registry for one run (`ctx.commands`): what it registers is
    removed again when the run ends (`unregister_all`, called by the runtime)."""

    def __init__(self, registry: CommandRegistry, owner: str):
        self.registry = registry
        self.owner = owner
        self._mine: list[Command] = []

    def register(self, command: Command) -> None:
        self.registry.register(command, self.owner)
        self._mine.append(command)

    def call(self, name: str, payload: dict | None = None, *, via: str, allow_dangerous: bool = False) -> Any:
        return self.registry.call(name, payload, via=via, allow_dangerous=allow_dangerous)

    def names(self) -> list[str]:
        return self.registry.names()

    def unregister_all(self) -> None:
        for command in self._mine:
            self.registry.unregister(command)
        self._mine.clear()
