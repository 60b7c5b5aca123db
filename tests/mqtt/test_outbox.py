"""The outbox contract, on a real SQLite store and in memory, with an injected clock."""

from __future__ import annotations

import threading

import pytest

from edge.clock import FakeClock
from edge.mqtt.outbox import KEEP, NORMAL, OUTBOX_SCHEMA, MemoryOutbox, Outbox, OutboxStore, Outgoing
from edge.store import Store, StoreUnavailable


def msg(n: int, keep: bool = False, key: str | None = None, size: int = 10, total: int | None = None) -> Outgoing:
    """Message n; `total` sets topic + payload bytes (what counts against the cap)."""
    topic = f"t/{n}"
    size = total - len(topic) if total else size
    return Outgoing(topic, b"x" * size, keep=keep, coalesce_key=key, event_id=f"e{n}")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store(tmp_path / "edge.sqlite3", clock, schemas=[OUTBOX_SCHEMA])
    yield s
    s.close()


@pytest.fixture(params=["disk", "memory"])
def box(request, store, clock):
    if request.param == "disk":
        return OutboxStore(store, clock, max_bytes=10_000, ttl_s=60, boot_id="boot-a")
    return MemoryOutbox(clock, max_bytes=10_000, ttl_s=60)


def topics(rows):
    return [r.topic for r in rows]


def test_append_peek_inflight_ack_in_order(box):
    ids = box.append([msg(i) for i in range(5)])
    assert ids == sorted(ids)
    assert topics(box.peek(3)) == ["t/0", "t/1", "t/2"]
    box.mark_inflight(ids[:3])
    assert topics(box.peek(10)) == ["t/3", "t/4"]  # peek moves past what is in flight
    assert (box.pending(), box.inflight()) == (2, 3)
    box.ack([ids[1]])  # PUBACKs may come in any order
    box.ack([ids[0], ids[2]])
    assert (box.pending(), box.inflight()) == (2, 0)
    box.release_inflight()  # a new client: everything unacknowledged goes again
    assert topics(box.peek(10)) == ["t/3", "t/4"]


def test_messages_written_as_already_sent_are_in_flight_at_once_and_go_again_after_release(box):
    box.append([msg(0)])
    box.mark_inflight([r.id for r in box.peek(1)])
    ids = box.append([msg(1), msg(2)], sent=True)  # handed to the broker before they were written
    assert box.peek(10) == [] and (box.pending(), box.inflight()) == (0, 3)
    box.ack([ids[0]])  # its PUBACK
    box.release_inflight()  # a new client: what is unacknowledged goes again, in order
    assert topics(box.peek(10)) == ["t/0", "t/2"]


def test_unacked_messages_are_sent_again_after_release(box):
    ids = box.append([msg(i) for i in range(3)])
    box.mark_inflight(ids)
    box.ack([ids[0]])
    box.release_inflight()
    assert topics(box.peek(10)) == ["t/1", "t/2"]


def test_coalescing_replaces_an_unsent_message_but_not_one_in_flight(box):
    first = box.append([msg(1, key="job-7")])
    box.append([msg(2), msg(3, key="job-7")])
    assert topics(box.peek(10)) == ["t/2", "t/3"]  # the newer one replaced the older, at the end
    assert box.coalesced == 1
    box.mark_inflight([r.id for r in box.peek(10)])
    box.append([msg(4, key="job-7")])  # t/3 is the broker's now: both stay
    assert topics(box.peek(10)) == ["t/4"] and box.inflight() == 2
    assert first


def test_ttl_drops_only_ordinary_messages_on_monotonic_time(box, clock):
    box.append([msg(1), msg(2, keep=True)])
    clock.jump_wall(-10 * 365 * 86400)  # an NTP step changes nothing
    assert box.expire() == 0
    clock.advance(61)
    assert box.expire() == 1
    assert topics(box.peek(10)) == ["t/2"]
    assert box.drops == {("ttl", NORMAL): 1}


def test_byte_cap_evicts_ordinary_first_then_kept_and_counts_it(box):
    box.append([msg(i, keep=(i % 2 == 0), total=1000) for i in range(10)])  # exactly at the 10,000-byte cap
    assert box.bytes == 10_000 and not box.drops
    box.append([msg(10, keep=True, total=1000)])
    assert "t/1" not in topics(box.peek(20)) and box.drops == {("cap", NORMAL): 1}
    box.mark_inflight([box.peek(1)[0].id])  # t/0, a kept one, is now in flight: never evicted
    box.append([msg(i, keep=True, total=1000) for i in range(11, 16)])
    rows = topics(box.peek(20))
    assert all(f"t/{i}" not in rows for i in (1, 3, 5, 7, 9))  # every ordinary one went first
    assert box.drops[("cap", KEEP)] == 1 and "t/2" not in rows  # then the oldest kept one not in flight
    assert box.bytes <= box.max_bytes


def test_a_message_larger_than_the_cap_is_dropped_and_counted(box):
    box.append([msg(1, size=20_000)])
    assert box.peek(1) == [] and box.drops == {("too_large", NORMAL): 1}


def test_durable_across_a_crash_with_in_flight_rows_released(tmp_path, clock):
    path = tmp_path / "edge.sqlite3"
    store = Store(path, clock, schemas=[OUTBOX_SCHEMA])
    box = OutboxStore(store, clock, boot_id="boot-a")
    ids = box.append([msg(i) for i in range(4)])
    box.mark_inflight(ids[:2])
    box.ack([ids[0]])
    store.close()  # the process dies here: t/1 was in flight, unacknowledged

    store = Store(path, clock, schemas=[OUTBOX_SCHEMA])
    box = OutboxStore(store, clock, boot_id="boot-a")
    assert box.redelivered_at_open == 1
    assert topics(box.peek(10)) == ["t/1", "t/2", "t/3"]
    assert box.bytes == sum(len(f"t/{i}") + 10 for i in (1, 2, 3))
    store.close()


def test_another_boot_restarts_the_ttl_clock_instead_of_trusting_it(tmp_path, clock):
    path = tmp_path / "edge.sqlite3"
    store = Store(path, clock, schemas=[OUTBOX_SCHEMA])
    OutboxStore(store, clock, ttl_s=60, boot_id="boot-a").append([msg(1)])
    store.close()
    clock.advance(-500)  # after a reboot the monotonic clock starts again near zero
    store = Store(path, clock, schemas=[OUTBOX_SCHEMA])
    box = OutboxStore(store, clock, ttl_s=60, boot_id="boot-b")
    clock.advance(59)
    assert box.expire() == 0
    clock.advance(2)
    assert box.expire() == 1
    store.close()


def test_an_idle_open_writes_nothing(store, clock):
    OutboxStore(store, clock, boot_id="boot-a")
    before = store.counters()["commits"]
    box = OutboxStore(store, clock, boot_id="boot-a")
    box.expire()
    box.peek(10)
    box.release_inflight()
    assert store.counters()["commits"] == before


class RefusingStore(Store):
    """A store whose disk refuses writes while `full` is set."""

    full = False

    def write(self, fn):
        if self.full:
            raise StoreUnavailable("state disk is full: free space under the state directory")
        return super().write(fn)


def test_outbox_spills_to_memory_while_the_disk_refuses_and_moves_back_in_order(tmp_path, clock):
    store = RefusingStore(tmp_path / "edge.sqlite3", clock, schemas=[OUTBOX_SCHEMA])
    box = Outbox(OutboxStore(store, clock, boot_id="boot-a"), MemoryOutbox(clock))
    box.append([msg(1), msg(2)])
    store.full = True
    box.append([msg(3)])
    box.append([msg(4)])
    assert box.degraded and "full" in box.degraded
    rows = box.peek(3)
    assert topics(rows) == ["t/1", "t/2", "t/3"]  # disk rows are older
    box.mark_inflight(rows)  # t/3 is in flight from memory
    store.full = False
    box.append([msg(5)])  # the disk works again: t/4 moves back, before t/5
    assert box.degraded is None
    assert topics(box.peek(10)) == ["t/4", "t/5"]
    box.ack(r.key for r in rows)
    assert box.counts() == {"pending": 2, "inflight": 0, "bytes": box.counts()["bytes"]}
    store.close()


def test_an_unexpected_error_while_moving_rows_back_to_disk_leaves_them_in_memory(tmp_path, clock, monkeypatch):
    store = RefusingStore(tmp_path / "edge.sqlite3", clock, schemas=[OUTBOX_SCHEMA])
    box = Outbox(OutboxStore(store, clock, boot_id="boot-a"), MemoryOutbox(clock))
    store.full = True
    box.append([msg(1), msg(2)])  # kept in memory
    store.full = False

    def broken(messages, sent=False):
        raise RuntimeError("a bug below the outbox")
    monkeypatch.setattr(box.durable, "append", broken)
    with pytest.raises(RuntimeError, match="a bug below"):
        box.append([msg(3)])
    monkeypatch.undo()
    box.append([msg(4)])
    assert topics(box.peek(10)) == ["t/1", "t/2", "t/4"] and box.degraded is None
    store.close()


def test_rows_written_as_sent_never_move_the_cursor_past_rows_still_unsent(box):
    """A row written as already sent moves the cursor past itself only when nothing unsent
    waits before it (the forwarder hands an event over at once only when the outbox is
    drained). If unsent rows came in under the forwarder (a store that opened late, holding
    what an earlier process left), the sent row goes again after them: never a loss."""
    box.append([msg(0)])  # unsent, and not counted by the forwarder
    box.append([msg(1)], sent=True)
    assert topics(box.peek(10)) == ["t/0", "t/1"]
    box.mark_inflight([r.id for r in box.peek(10)])
    box.append([msg(2)], sent=True)  # now nothing waits before it
    assert box.peek(10) == [] and (box.pending(), box.inflight()) == (0, 3)


def test_no_store_at_all_keeps_events_in_memory_and_says_so(clock):
    box = Outbox.open(None, clock, max_bytes=10_000, ttl_s=60)
    box.append([msg(1)])
    assert topics(box.peek(5)) == ["t/1"]
    assert "no store" in box.degraded


def test_a_store_that_opens_late_takes_the_events_waiting_in_memory_in_order(store, clock):
    outbox = Outbox.open(None, clock, max_bytes=10_000, ttl_s=60)  # no store at boot
    outbox.append([msg(i) for i in range(3)])
    assert outbox.degraded.startswith("no store")
    assert outbox.attach(store, clock, max_bytes=10_000, ttl_s=60)
    outbox.append([msg(3)])
    assert outbox.degraded is None and outbox.memory.pending() == 0
    assert topics(outbox.peek(10)) == ["t/0", "t/1", "t/2", "t/3"]
    assert [r.source for r in outbox.peek(10)] == ["disk"] * 4


def test_a_store_attached_while_an_event_is_being_kept_in_memory_still_takes_that_event_first(store, clock):
    """attach (the link's thread) decides whether memory holds rows to move; an append (the
    ingest thread) that chose memory before it must have its row counted, or that row would
    stay in memory only, sent after newer disk rows, while the outbox said it was durable."""
    outbox = Outbox.open(None, clock, max_bytes=10_000, ttl_s=60)
    memory_append, entered, release = outbox.memory.append, threading.Event(), threading.Event()

    def slow_memory_append(messages, sent=False):
        entered.set()
        release.wait(10)
        return memory_append(messages, sent)

    outbox.memory.append = slow_memory_append
    writer = threading.Thread(target=outbox.append, args=([msg(1)],))
    writer.start()
    assert entered.wait(10)
    attaching = threading.Thread(target=outbox.attach, args=(store, clock, 10_000, 60))
    attaching.start()
    attaching.join(0.3)  # without the outbox's lock, attach is done here, before the row is in
    release.set()
    writer.join(10)
    attaching.join(10)
    outbox.memory.append = memory_append
    outbox.append([msg(2)])
    assert [(r.topic, r.source) for r in outbox.peek(10)] == [("t/1", "disk"), ("t/2", "disk")]
    assert outbox.degraded is None
