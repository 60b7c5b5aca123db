"""The event forwarder's hand-over rules, driven step by step: a real outbox on a real
SQLite file, a recording stand-in for the paho connection (what paho does on the wire is
the subject of test_store_and_forward.py)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from edge.bus import Event
from edge.clock import FakeClock
from edge.mqtt.forwarding import EventForwarder
from edge.mqtt.metrics import LinkCounters
from edge.mqtt.outbox import OUTBOX_SCHEMA, Outbox, OutboxStore, Outgoing
from edge.mqtt.topics import Topics
from edge.store import Store, StoreUnavailable


class RecordingConnection:
    """Takes every publish and gives it the next message id, as a connected paho client does."""

    def __init__(self):
        self.published: list[bytes] = []

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        self.published.append(payload)
        return len(self.published)


def tick(n: int, kind: str = "test.tick") -> Event:
    return Event(kind, {"n": n}, f"tick-{n}", 1_700_000_000.0 + n, float(n))


def sent_ids(conn: RecordingConnection) -> list[bytes]:
    return [p.split(b'"event_id":"')[1][:6] for p in conn.published]


CLOCK = FakeClock()  # nothing here expires: one fixed time for the store and the outbox


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "edge.sqlite3", CLOCK, schemas=[OUTBOX_SCHEMA])
    yield s
    s.close()


def connected_forwarder(store: Store | None, window: int, looked: bool = True) -> tuple[EventForwarder, RecordingConnection]:
    """A forwarder whose link is connected and, if `looked`, has found nothing to send."""
    outbox = Outbox.open(store, CLOCK, 2**20, 3600)
    conn = RecordingConnection()
    forwarder = EventForwarder(outbox, Topics("door"), lambda kind: kind == "doorbell.ring", LinkCounters(),
                               window=window, keep_kinds=set(), picture_kinds=set(), wake=lambda: None,
                               connection=lambda: (conn, True))
    if looked:
        forwarder.on_connected()
        forwarder.pump(conn, True)
    return forwarder, conn


def test_express_hands_a_ring_over_when_the_outbox_is_drained_and_its_row_is_not_sent_again(store):
    forwarder, conn = connected_forwarder(store, window=5)
    ring = tick(1, "doorbell.ring")
    forwarder.express(ring)
    assert sent_ids(conn) == [b"tick-1"]  # before the ingest thread saw it
    forwarder.take([ring])  # its row, written as in flight
    assert forwarder.outbox.counts()["inflight"] == 1
    forwarder.on_acked(1, None)
    forwarder.pump(conn, True)
    forwarder.take([tick(2)])
    forwarder.pump(conn, True)
    assert sent_ids(conn) == [b"tick-1", b"tick-2"]
    assert forwarder.outbox.counts()["inflight"] == 1  # tick-2's; the ring's row is gone with its PUBACK


def test_express_leaves_a_ring_that_finds_an_unsent_event_to_the_ingest_thread(store):
    """With room in the window but an event still unsent (the link has not looked at the
    outbox since it connected), the ring must not overtake it."""
    forwarder, conn = connected_forwarder(store, window=5, looked=False)
    forwarder.take([tick(1)])
    ring = tick(2, "doorbell.ring")
    forwarder.express(ring)
    forwarder.take([ring])
    assert conn.published == []
    forwarder.on_connected()
    forwarder.pump(conn, True)
    assert sent_ids(conn) == [b"tick-1", b"tick-2"]


def test_an_event_written_while_the_pump_reads_the_outbox_is_sent_not_stranded(store):
    """The pump may call the outbox drained only if no unsent write was under way while it
    read it: a write that ended between that read and the pump's check has a row the read did
    not see, which would wait unsent while every later event went out at once before it."""
    forwarder, conn = connected_forwarder(store, window=1)  # nothing waits: drained
    outbox = forwarder.outbox
    forwarder.take([tick(1)])  # handed to paho at once, and the window (1) is full
    assert len(conn.published) == 1

    append, peek = outbox.append, outbox.peek
    writing, release = threading.Event(), threading.Event()

    def slow_append(messages, sent=False):  # the second event's unsent row, on a slow card
        if not sent:
            writing.set()
            release.wait(10)
        return append(messages, sent)

    writer = threading.Thread(target=forwarder.take, args=([tick(2)],))

    def read_during_the_write(limit):  # the pump reads before the row is in; the write ends after
        rows = peek(limit)
        release.set()
        return rows

    outbox.append, outbox.peek = slow_append, read_during_the_write
    writer.start()
    assert writing.wait(10)
    forwarder.on_acked(1, None)  # the first event's PUBACK frees the window
    forwarder.pump(conn, True)  # reads the outbox while the second event's row is being written
    writer.join(10)  # the row goes in once the pump has finished with the outbox (its lock)
    outbox.peek = peek
    forwarder.pump(conn, True)  # woken by the writer
    forwarder.take([tick(3)])
    forwarder.pump(conn, True)
    assert sent_ids(conn) == [b"tick-1", b"tick-2"]
    forwarder.on_acked(2, None)
    forwarder.pump(conn, True)
    assert sent_ids(conn) == [b"tick-1", b"tick-2", b"tick-3"]


def test_rows_an_earlier_process_left_unsent_go_out_first_when_the_store_opens_late(tmp_path):
    """The store could not open at boot, so the forwarder found nothing to send and counts the
    outbox as drained. The store that opens later holds a ring an earlier process left
    unsent: it goes out, and before the next ring (which must not go at once past it)."""
    earlier = Store(tmp_path / "edge.sqlite3", CLOCK, schemas=[OUTBOX_SCHEMA])
    OutboxStore(earlier, CLOCK).append([Outgoing("edge/door/event/doorbell.ring", b'{"event_id":"old-01"}',
                                                 keep=True, event_id="old-01")])
    earlier.close()
    forwarder, conn = connected_forwarder(None, window=5)  # no store: drained, nothing sent
    store = Store(tmp_path / "edge.sqlite3", CLOCK, schemas=[OUTBOX_SCHEMA])
    try:
        assert forwarder.outbox.attach(store, CLOCK, 2**20, 3600)
        forwarder.outbox_grew()  # as the link does after attaching
        forwarder.take([tick(1, "doorbell.ring")])
        forwarder.pump(conn, True)
        assert sent_ids(conn) == [b"old-01", b"tick-1"]
    finally:
        store.close()


class _RefusingStore(Store):
    """A store whose disk refuses writes while `full`, and fails the outbox's next `failed_reads` reads."""
    full = False
    failed_reads = 0

    def write(self, fn):
        if self.full:
            raise StoreUnavailable("disk full")
        return super().write(fn)

    def read(self, sql, params=()):
        if self.failed_reads and sql.startswith("SELECT id, topic"):
            self.failed_reads -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().read(sql, params)


@pytest.fixture
def refusing_store(tmp_path):
    s = _RefusingStore(tmp_path / "edge.sqlite3", CLOCK, schemas=[OUTBOX_SCHEMA])
    yield s
    s.close()


def test_events_spilled_to_memory_are_not_moved_to_disk_while_the_pump_hands_them_over(refusing_store):
    """The disk refused two events, so they wait in memory. It works again, and the pump hands
    them to paho; the next event's write, in the ingest thread, would move them to disk under
    new keys, and their PUBACKs would not find them: each would go twice, the second time
    after later ones. Rows do not move while the pump hands them over."""
    forwarder, conn = connected_forwarder(refusing_store, window=10, looked=False)
    refusing_store.full = True
    forwarder.take([tick(1)])
    forwarder.take([tick(2)])
    assert forwarder.outbox.memory.pending() == 2
    refusing_store.full = False
    ingest = threading.Thread(target=forwarder.take, args=([tick(3)],))
    publish = conn.publish

    def publish_while_the_next_event_is_written(*args, **kwargs):
        if not ingest.is_alive() and ingest.ident is None:
            ingest.start()
            ingest.join(0.3)  # without the lock the move happens here
        return publish(*args, **kwargs)

    conn.publish = publish_while_the_next_event_is_written
    forwarder.on_connected()
    forwarder.pump(conn, True)
    ingest.join(10)
    for _ in range(3):
        for mid in range(1, len(conn.published) + 1):
            forwarder.on_acked(mid, None)
        forwarder.pump(conn, True)
    assert sent_ids(conn) == [b"tick-1", b"tick-2", b"tick-3"]
    assert forwarder.outbox.counts()["pending"] == 0


def test_a_failed_outbox_read_leaves_the_outbox_undrained_so_no_event_overtakes_the_unread_ones(refusing_store):
    """A read that fails (another process holds the database past the busy timeout) must not
    look like an empty outbox: later events would go at once while the unread one waited."""
    forwarder, conn = connected_forwarder(refusing_store, window=10, looked=False)
    forwarder.outbox.append([forwarder.message(tick(1))])  # left by the broker's absence
    refusing_store.failed_reads = 1
    forwarder.on_connected()
    forwarder.pump(conn, True)  # the read fails
    assert conn.published == []
    for n in (2, 3):
        forwarder.take([tick(n)])
        forwarder.pump(conn, True)
    assert sent_ids(conn) == [b"tick-1", b"tick-2", b"tick-3"]
