"""Events from the bus to the broker: bus → outbox (disk) → paho (QoS 1) → PUBACK → ack.

The rule: every bus event except kinds starting with "internal." is published on
`edge/<node>/event/<kind>` as JSON ({event_type, event_id, kind, time, data}), QoS 1 and never
retained (a retained press would ring again whenever Home Assistant resubscribes).

- Kinds the bus never drops (rings) and kinds an entity declares are the outbox's `keep`
  class; an event whose data has a `coalesce_key` replaces an unsent one with the same kind
  and key (see `outbox` for the whole contract).
- An event that finds nothing waiting before it (connected, the outbox drained, room in the
  window) is handed to paho at once and written to the outbox as in flight while it travels:
  a ring does not wait for a disk write that may queue behind others. Its durability is the
  same (it is on disk once the write returns; a PUBACK that comes first is applied then).
  Otherwise events wait in the outbox and the link's thread sends them in order (`pump`).
- A never-drop event (a ring) that can go at once is handed to paho in the publisher's
  thread, the bus's express lane (`express`): one thread wake-up fewer on the ring path.
  The bus queues it all the same, and the ingest thread writes its row as in flight.
- At most `window` events are handed to paho and unacknowledged at once. After a reconnect
  paho first re-sends the ones that were in flight at the cut; new events wait until those
  are acknowledged (the barrier), so first arrivals stay in order and a duplicate can only be
  a message whose PUBACK was lost.
- An event that feeds an image (or camera) entity is a picture, not a record: it goes out as
  the raw bytes of its picture (the first bytes value in its data, e.g. `jpeg`), and waits for
  a connection in memory only, newest wins. It never reaches the disk (a face must not
  outlive the snapshot folder's retention in a second place) and is sent only after the
  events that came before it, never overtaking them. Elsewhere a bytes value is shown as
  "<N bytes>", never inlined.

Threads: `express` runs on the publisher's (under the bus queue's lock), `take` on the
link's ingest thread, `on_acked` / `on_connected` on paho's, `pump` on the link's own.
`_lock` guards the shared maps (short sections only); `_send_lock` is held by whoever hands
events to paho, so the order on the wire is the outbox's order (and while PUBACKs are
matched, so an event handed over at once is found).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from edge.bus import Event
from edge.mqtt.connection import BrokerConnection, PublishRefused
from edge.mqtt.outbox import KEEP, NORMAL, Outbox, Outgoing, Queued
from edge.store import StoreUnavailable

Connection = Callable[[], tuple[BrokerConnection | None, bool]]  # the link's client and whether it is connected
from edge.mqtt.topics import Topics

log = logging.getLogger("edge.mqtt.forwarding")

INTERNAL_PREFIX = "internal."


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return str(value)


def to_json(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


class _Early:
    """An event handed to paho before its outbox row was written: its PUBACK may come
    first, and is then applied by the writer once the row exists."""

    __slots__ = ("message", "mid", "row", "acked", "error")

    def __init__(self, message: Outgoing, mid: int):
        self.message, self.mid = message, mid
        self.row: Queued | None = None
        self.acked, self.error = False, None


class EventForwarder:
    def __init__(self, outbox: Outbox, topics: Topics, is_never_drop: Callable[[str], bool], counters: Any,
                 window: int, keep_kinds: set[str], picture_kinds: set[str], wake: Callable[[], None],
                 connection: Connection):
        self.outbox = outbox
        self.topics = topics
        self._is_never_drop = is_never_drop
        self._counters = counters
        self.window = window
        self._keep_kinds = keep_kinds
        self._picture_kinds = picture_kinds
        self._wake = wake
        self._connection = connection
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.changed = threading.Event()        # appended, acked, reconnected: look at the outbox
        self._acks: deque[tuple[int, str | None]] = deque()
        self._inflight: dict[int, Queued | _Early] = {}  # paho message id -> outbox row
        # The pump found nothing unsent and no unsent write was under way: a new event may go
        # out at once. Writes of unsent events clear it and are counted, so the pump can tell.
        self._drained = False
        self._unsent_writes = 0       # generation: unsent writes begun
        self._unsent_writing = 0      # unsent writes not yet returned
        self._barrier: set[int] = set()         # ids paho re-sends after a reconnect; new events wait
        self._pictures: dict[str, bytes] = {}   # topic -> newest picture not yet sent
        self._expressed: dict[int, _Early] = {}  # id() of a bus event handed over by `express`
        self.counts = {"pending": 0, "inflight": 0, "bytes": 0}  # cached for health and metrics

    # -- the publisher's thread (the bus's express lane) ---------------------------------------
    def express(self, event: Event) -> None:
        """Hand the event to paho now if it can go at once; `take` then writes its row. Never
        waits for the send lock (it only tries it; the other locks on the way, this one's and
        paho's, are held briefly and never across I/O): when it cannot go now it is left to
        `take` like any other. Only for an event nothing waits before: the outbox drained
        (checked here) and no earlier event still with the ingest thread (the bus's rule),
        since an event handed over at once overtakes whatever waits."""
        if event.kind in self._picture_kinds or event.kind.startswith(INTERNAL_PREFIX):
            return
        handed, _ = self._hand_over([self.message(event)], express=True)
        if handed:
            with self._lock:
                self._expressed[id(event)] = handed[0]  # the queue holds the event until `take`

    # -- the ingest thread ------------------------------------------------------------------
    def take(self, batch: list[Event]) -> None:
        """Events into the outbox in one transaction; a picture only after the events that
        came before it are in (it is sent once they have gone)."""
        messages: list[Outgoing] = []
        for event in batch:
            with self._lock:
                expressed = self._expressed.pop(id(event), None)
            if expressed is not None:
                self._append(messages)
                messages = []
                self._write_handed([expressed])
            elif event.kind in self._picture_kinds:
                self._append(messages)
                messages = []
                self._keep_picture(event)
            elif not event.kind.startswith(INTERNAL_PREFIX):
                messages.append(self.message(event))
        self._append(messages)

    def _append(self, messages: list[Outgoing]) -> None:
        if not messages:
            return
        handed, rest = self._hand_over(messages)
        if handed:
            self._write_handed(handed)
        if rest:
            try:
                self.outbox.append(rest)
            finally:
                with self._lock:
                    self._unsent_writing -= 1
            self.changed.set()
            self._wake()

    def _write_handed(self, handed: list[_Early]) -> None:
        self._written_early(handed, self.outbox.append([e.message for e in handed], sent=True))
        self.changed.set()
        self._wake()

    def _hand_over(self, messages: list[Outgoing], express: bool = False) -> tuple[list[_Early], list[Outgoing]]:
        """Publish `messages` now when nothing waits before them; returns those handed to
        paho and those left for the outbox (counted as an unsent write under way, except for
        `express`, whose rest `take` gets again)."""
        conn, connected = self._connection()
        with self._lock:
            at_once = (self._drained and conn is not None and connected and not self._barrier
                       and self.window - len(self._inflight) >= len(messages)
                       and all(m.size <= self.outbox.max_bytes for m in messages)
                       and self._send_lock.acquire(blocking=False))  # not while the pump sends
            if not at_once:
                if not express:
                    self._unsent_write()
                return [], messages
        try:
            handed: list[_Early] = []
            for n, message in enumerate(messages):
                try:
                    mid = conn.publish(message.topic, message.payload, qos=message.qos, retain=False)
                except PublishRefused as exc:
                    if express:  # `take` refuses it again, and counts it once
                        return handed, messages[n:]
                    log.error("event %s cannot be published (%s): dropped", message.event_id, exc)
                    self._counters.drop("refused", KEEP if message.keep else NORMAL)
                    continue
                with self._lock:
                    if mid is None:  # paho cannot take it now: the rest wait in the outbox
                        if not express:
                            self._unsent_write()
                        return handed, messages[n:]
                    early = self._inflight[mid] = _Early(message, mid)
                handed.append(early)
            return handed, []
        finally:
            self._send_lock.release()

    def outbox_grew(self) -> None:
        """The outbox took rows this forwarder did not write (a store that opened late brings
        what an earlier process left unsent): not drained until the pump has looked."""
        with self._lock:
            self._drained = False
        self.changed.set()

    def _unsent_write(self) -> None:
        """Under `_lock`: an unsent write begins, so the outbox is not drained."""
        self._drained = False
        self._unsent_writes += 1
        self._unsent_writing += 1

    def _written_early(self, handed: list[_Early], rows: list[Queued]) -> None:
        """The rows of events paho already has: tracked from now, or acked if the PUBACK came first."""
        acked = []
        with self._lock:
            for early, row in zip(handed, rows):
                early.row = row
                if early.acked:
                    acked.append((row, early.error))
                elif self._inflight.get(early.mid) is early:
                    self._inflight[early.mid] = row
        delivered = [self._delivered(row, error) for row, error in acked]
        if delivered:
            self.outbox.ack(delivered)

    def _keep_picture(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        picture = next((bytes(v) for v in data.values() if isinstance(v, (bytes, bytearray, memoryview))), None)
        if picture is None:
            log.warning("event %s feeds an image entity but carries no picture bytes; not published",
                        event.kind, extra={"event_id": event.event_id})
            return
        with self._lock:
            self._pictures[self.topics.event(event.kind)] = picture
        self.changed.set()
        self._wake()

    def message(self, event: Event) -> Outgoing:
        data = event.data if isinstance(event.data, dict) else {"value": event.data}
        body = {"event_type": str(data.get("event_type") or event.kind.rsplit(".", 1)[-1]),
                "event_id": event.event_id, "kind": event.kind,
                "time": datetime.fromtimestamp(event.ts_wall, timezone.utc).isoformat(timespec="milliseconds"),
                "data": data}
        key = data.get("coalesce_key")
        keep = self._is_never_drop(event.kind) or event.kind in self._keep_kinds
        return Outgoing(self.topics.event(event.kind), to_json(body), keep=keep,
                        coalesce_key=f"{event.kind}:{key}" if key is not None else None, event_id=event.event_id)

    # -- paho's thread ------------------------------------------------------------------------
    def on_connected(self) -> None:
        """Call before the link counts as connected: paho re-sends what was in flight first."""
        with self._lock:
            self._barrier = set(self._inflight)
        self.changed.set()

    def on_acked(self, mid: int, error: str | None) -> None:
        self._acks.append((mid, error))
        self.changed.set()

    # -- the link's thread ------------------------------------------------------------------------
    def pump(self, conn: BrokerConnection | None, connected: bool) -> None:
        """Apply acks, hand the next events to paho, send waiting pictures."""
        changed = self.changed.is_set()
        self.changed.clear()  # before looking: a change from now on comes round again
        changed |= self._handle_acks()
        if changed:
            with self._lock:
                unsent = not self._drained
            # Drained, there is nothing to send: looking would hold the send lock across an
            # outbox read, and a ring arriving meanwhile would wait in the outbox.
            if unsent and conn is not None and connected:
                self._send(conn)
            self.counts = self.outbox.counts()
        if conn is not None and connected:
            self._send_pictures(conn)

    def _send(self, conn: BrokerConnection) -> None:
        with self._send_lock:
            with self._lock:
                if self._barrier:
                    return
                room = self.window - len(self._inflight)
                writes, writing = self._unsent_writes, self._unsent_writing
            if room <= 0:
                return
            with self.outbox.handing():
                try:
                    rows = self.outbox.peek(room)
                except (StoreUnavailable, sqlite3.Error) as exc:
                    # Left undrained (the pump sends only then): the next look (the link
                    # refreshes its counts every few seconds) reads again, and new events
                    # wait behind the rows it could not read.
                    log.error("outbox read failed (%s): events wait until it can be read", exc)
                    return
                complete = len(rows) < room
                if not complete:
                    self.changed.set()  # there may be more once acks free the window
                sent: list[Queued] = []
                refused: list[Queued] = []
                for row in rows:
                    try:
                        mid = conn.publish(row.topic, row.payload, qos=row.qos, retain=False)
                    except PublishRefused as exc:
                        log.error("event %s cannot be published (%s): dropped", row.event_id, exc)
                        refused.append(row)
                        continue
                    if mid is None:
                        self.changed.set()  # paho cannot take it now: try again on the next round
                        complete = False
                        break
                    with self._lock:
                        self._inflight[mid] = row
                    sent.append(row)
                self.outbox.mark_inflight(sent + refused)
            with self._lock:
                if not complete:
                    self._drained = False
                # Drained only if no unsent write was under way while the outbox was read: one
                # that ended between the read and now has rows the read did not see (its
                # writer wakes the pump, which reads again).
                elif writes == self._unsent_writes and not writing:
                    self._drained = True
        if refused:
            self.outbox.ack(r.key for r in refused)
            for r in refused:
                self._counters.drop("refused", KEEP if r.keep else NORMAL)

    def _handle_acks(self) -> bool:
        """Apply the PUBACKs that came in; True when an event was acknowledged."""
        acked = []
        with self._send_lock:  # an event handed over at once is in `_inflight` before its PUBACK is looked up
            while self._acks:
                mid, error = self._acks.popleft()
                with self._lock:
                    row = self._inflight.pop(mid, None)
                    self._barrier.discard(mid)
                    if isinstance(row, _Early):
                        if row.row is None:  # its writer applies it once the row exists
                            row.acked, row.error = True, error
                            continue
                        row = row.row
                if row is not None:  # None: a status, discovery config or reply
                    acked.append((row, error))
        delivered = [self._delivered(row, error) for row, error in acked]
        if delivered:
            self.outbox.ack(delivered)
        return bool(delivered)

    def _delivered(self, row: Queued, error: str | None) -> tuple[str, int]:
        """Count a PUBACK; the key of the row it deletes."""
        if error:
            # MQTT 5: the broker took the message and refused it (e.g. not authorized);
            # sending it again would be refused again and block every later event.
            log.error("broker refused event %s on %s: %s; dropped", row.event_id, row.topic, error)
            self._counters.drop("refused", KEEP if row.keep else NORMAL)
        else:
            self._counters.add("events_delivered")
        return row.key

    def _send_pictures(self, conn: BrokerConnection) -> None:
        """Only when every event that came before is on its way (nothing unsent in the
        outbox, nothing left for paho to re-send first)."""
        with self._lock:
            if self._barrier or not self._pictures or self.counts["pending"]:
                return
            pictures, self._pictures = self._pictures, {}
        for topic, picture in pictures.items():
            try:
                conn.publish(topic, picture, qos=1, retain=False)
            except PublishRefused as exc:
                log.error("picture not sent: %s", exc)
