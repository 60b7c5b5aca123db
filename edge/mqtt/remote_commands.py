"""Commands from Home Assistant over MQTT (`edge/<node>/cmd/<name>`), and the node's own
commands (restart a worker, restart the runtime).

paho's thread only queues a command (bounded: a flood is refused, counted and answered, its
payload not buffered; an oversized payload is refused there and then, never copied);
the link's thread runs it through `edge.commands.CommandRegistry`, which checks size,
schema and authorization, counts every outcome and never lets a handler's exception
escape. Each command gets a reply on `edge/<node>/cmd/<name>/result` (and, for MQTT 5, on
the request's response topic with its correlation data). Commands that open the door or
change who is known (`dangerous`) are refused unless `[mqtt] allow_dangerous_commands`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any, Callable

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.commands import MAX_PAYLOAD, Command, CommandRegistry, CommandRejected, WorkerCommands
from edge.mqtt.topics import Topics

log = logging.getLogger("edge.mqtt.commands")

MAX_QUEUED = 32
DANGEROUS_HINT = "set [mqtt] allow_dangerous_commands = true to accept it over MQTT"

Publish = Callable[[str, bytes, Properties | None], None]


def is_button_path(worker) -> bool:
    """The doorbell's kind of worker: essential (runs in safe mode) and critical."""
    return bool(worker.essential and worker.critical)


def register_node_commands(commands: WorkerCommands, runtime: Any) -> None:
    """restart_worker {"worker": name} and restart_runtime {} (Home Assistant's buttons)."""

    def restart_worker(payload: dict, via: str) -> dict:
        runners = {r.name: r for r in runtime.supervisor.runners} if runtime.supervisor else {}
        runner = runners.get(payload["worker"])
        if runner is None:
            raise CommandRejected(f"restart_worker: no running worker {payload['worker']!r}; "
                                  f"known: {', '.join(runners)}", "invalid")
        runtime.restart_requests.allow_worker(runner.name, button_path=is_button_path(runner.worker))
        if not runtime.supervisor.restart(runner.name):
            raise CommandRejected(f"restart_worker: {runner.name} is not running now ({runner.state}: "
                                  f"{runner.reason}); it is restarted by its own policy", "failed")
        return {"restarting": runner.name}

    def restart_runtime(payload: dict, via: str) -> dict:
        runtime.restart_requests.allow_runtime()
        runtime.request_restart()
        return {"restarting": "runtime"}

    commands.register(Command("restart_worker", restart_worker, {"worker": str}))
    commands.register(Command("restart_runtime", restart_runtime, {}))


class RemoteCommands:
    def __init__(self, registry: CommandRegistry, topics: Topics, allow_dangerous: bool):
        self.registry = registry
        self.topics = topics
        self.allow_dangerous = allow_dangerous
        self._queue: deque[tuple[str, bytes, Properties | None]] = deque()
        # Refusals decided on paho's thread, waiting for their reply (no payload kept).
        self._refused: deque[tuple[str, CommandRejected, Properties | None]] = deque()
        self._lock = threading.Lock()

    def offer(self, name: str, payload: bytes, properties: Properties | None) -> bool:
        """From paho's thread: queue a command; False (counted, and answered while the
        refusals fit in their own small queue) when it is oversized or too many wait."""
        with self._lock:
            if len(payload) > MAX_PAYLOAD:
                refusal = self.registry.reject_oversized(len(payload))
            elif len(self._queue) >= MAX_QUEUED:
                refusal = self.registry.reject(f"{MAX_QUEUED} commands are already waiting; send it again in a "
                                               f"moment", "busy")
            else:
                self._queue.append((name, bytes(payload), properties))
                return True
            if len(self._refused) < MAX_QUEUED:
                self._refused.append((name, refusal, properties))
            return False

    def run_pending(self, publish: Publish) -> int:
        """On the link's thread: run queued commands and publish their replies."""
        n = 0
        while True:
            with self._lock:
                if self._refused:
                    name, refusal, properties = self._refused.popleft()
                    reply = _refusal(name, refusal)
                elif self._queue:
                    name, payload, properties = self._queue.popleft()
                    reply = None
                else:
                    return n
            n += 1
            self._reply(name, reply or self.run_one(name, payload), properties, publish)

    def _reply(self, name: str, reply: dict, properties: Properties | None, publish: Publish) -> None:
        body = json.dumps(reply, default=str, separators=(",", ":")).encode()
        publish(self.topics.reply(name), body, None)
        response_topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            correlation = getattr(properties, "CorrelationData", None)
            if correlation is not None:
                props.CorrelationData = correlation
            publish(response_topic, body, props)

    def run_one(self, name: str, payload: bytes) -> dict:
        try:
            result = self.registry.execute(name, payload, allow_dangerous=self.allow_dangerous,
                                           dangerous_hint=DANGEROUS_HINT)
        except CommandRejected as exc:
            return _refusal(name, exc)
        except Exception as exc:  # nothing a command does may take the link down
            log.exception("command %s failed unexpectedly", name)
            self.registry.rejected["failed"] += 1
            return {"command": name, "ok": False, "code": "failed", "error": f"{type(exc).__name__}: {exc}"}
        return {"command": name, "ok": True, "result": result}


def _refusal(name: str, exc: CommandRejected) -> dict:
    return {"command": name, "ok": False, "code": exc.code, "error": str(exc)}
