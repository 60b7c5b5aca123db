"""In-process publish/subscribe between workers (a worker never imports another worker).

Each subscriber has its own bounded queue, so a slow subscriber cannot stall a publisher
(the button path above all). When a queue is full the oldest droppable event is dropped and
counted; an event whose kind is marked never-drop (a ring) evicts a droppable one instead,
and if the queue holds only never-drop events it grows past its bound rather than lose one.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

from edge.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("edge.bus")


def new_event_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Event:
    """`kind` is dotted (`doorbell.ring`); `event_id` follows a press through logs, MQTT,
    SIP and the audit log, so derived events reuse their cause's id. The times come from
    the bus's clock (the runtime's), so a latency computed later with `ctx.clock` against
    `ts_mono` is right under a FakeClock too."""

    kind: str
    data: dict[str, Any]
    event_id: str
    ts_wall: float
    ts_mono: float


class Subscription:
    def __init__(self, bus: "EventBus", name: str, patterns: tuple[str, ...], maxsize: int):
        self.name = name
        self.patterns = patterns
        self.maxsize = maxsize
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self._express: Callable[[Event], None] | None = None
        self._consuming = False  # the consumer took events it has not said `done` with

    def express(self, hand: Callable[[Event], None] | None) -> None:
        """Let the consumer see a never-drop event in the publisher's thread, when nothing
        is queued before it and the consumer is `done` with all it took: the MQTT link hands
        a ring to paho there and saves a thread wake-up. The event is queued as well, in
        order; `hand` runs under the queue's lock, so it must be quick: no I/O, and no lock held
        for longer than a short section."""
        with self._cond:
            self._express = hand

    def done(self) -> None:
        """The consumer has finished with every event it took (see `express`)."""
        with self._cond:
            self._consuming = False

    def matches(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, p) for p in self.patterns)

    def _offer(self, event: Event, never_drop: bool) -> Event | None:
        """Queue the event; returns the event that was dropped, if any."""
        with self._cond:
            if never_drop and self._express is not None and not self._queue and not self._consuming:
                try:
                    self._express(event)
                except Exception:  # the queue still has it: the consumer's usual path takes over
                    log.exception("%s: express hand-over of %s failed", self.name, event.kind)
            dropped = None
            if len(self._queue) >= self.maxsize:
                victim = next((e for e in self._queue if not self._bus.is_never_drop(e.kind)), None)
                if victim is not None:
                    self._queue.remove(victim)
                    dropped = victim
                elif not never_drop:
                    dropped = event
            if dropped is not event:
                self._queue.append(event)
            if dropped is not None:
                self.dropped += 1
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds (so workers can heartbeat)."""
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout)
            if not self._queue:
                return None
            self._consuming = True
            return self._queue.popleft()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        self._subs: list[Subscription] = []
        self._never_drop: set[str] = set()
        self._lock = threading.Lock()
        self.published = Counter()
        self.dropped = Counter()  # by event kind

    def mark_never_drop(self, *kinds: str) -> None:
        with self._lock:
            self._never_drop.update(kinds)

    def is_never_drop(self, kind: str) -> bool:
        return kind in self._never_drop

    def subscribe(self, name: str, *patterns: str, maxsize: int = 256) -> Subscription:
        sub = Subscription(self, name, patterns or ("*",), maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: Event) -> Event:
        with self._lock:
            subs = [s for s in self._subs if s.matches(event.kind)]
            self.published[event.kind] += 1
        never_drop = self.is_never_drop(event.kind)
        for sub in subs:
            dropped = sub._offer(event, never_drop)
            if dropped is not None:
                with self._lock:
                    self.dropped[dropped.kind] += 1
        return event

    def emit(self, kind: str, data: dict | None = None, event_id: str | None = None) -> Event:
        """Publish a new event, stamped with the bus's clock; pass the cause's `event_id`
        to keep the chain."""
        event = Event(kind, data or {}, event_id or new_event_id(), self.clock.wall(), self.clock.monotonic())
        return self.publish(event)
