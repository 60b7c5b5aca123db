"""Bus drop rules and the breaker/backoff logic on an injected clock."""

from __future__ import annotations

import random
import threading

from edge.breaker import CLOSED, HALF_OPEN, OPEN, Backoff, BreakerOpen, CircuitBreaker
from edge.bus import EventBus
from edge.clock import FakeClock

import pytest


def test_full_queue_drops_oldest_droppable_and_counts_it():
    bus = EventBus()
    sub = bus.subscribe("slow", "system.*", maxsize=2)
    for n in range(3):
        bus.emit("system.sample", {"n": n})
    assert [sub.get(0).data["n"] for _ in range(2)] == [1, 2]
    assert sub.dropped == 1 and bus.dropped["system.sample"] == 1


def test_never_drop_event_evicts_a_droppable_one():
    bus = EventBus()
    bus.mark_never_drop("doorbell.ring")
    sub = bus.subscribe("link", "*", maxsize=2)
    bus.emit("system.sample")
    bus.emit("system.sample")
    ring = bus.emit("doorbell.ring")
    kinds = [sub.get(0).kind for _ in range(2)]
    assert kinds == ["system.sample", "doorbell.ring"]
    assert bus.dropped == {"system.sample": 1}
    assert ring.event_id


def test_never_drop_events_grow_past_the_bound_rather_than_drop():
    bus = EventBus()
    bus.mark_never_drop("doorbell.ring")
    sub = bus.subscribe("link", "doorbell.*", maxsize=2)
    ids = [bus.emit("doorbell.ring").event_id for _ in range(5)]
    assert [sub.get(0).event_id for _ in range(5)] == ids
    assert sum(bus.dropped.values()) == 0


def test_express_lane_sees_a_never_drop_event_only_when_nothing_waits_before_it():
    """The consumer's express hand runs in the publisher's thread for a never-drop event, and
    only when no earlier event is queued or still with the consumer (not `done`); the event
    is queued all the same, so the consumer's usual path sees every event in order."""
    bus = EventBus()
    bus.mark_never_drop("doorbell.ring")
    sub = bus.subscribe("link", "*")
    seen = []
    sub.express(lambda event: seen.append((event.event_id, threading.get_ident())))
    bus.emit("system.sample")  # droppable: never expressed
    queued_behind = bus.emit("doorbell.ring").event_id  # the sample waits before it
    assert seen == []
    assert [sub.get(0).kind, sub.get(0).event_id] == ["system.sample", queued_behind]
    with_the_consumer = bus.emit("doorbell.ring").event_id  # the consumer is not done yet
    assert seen == []
    sub.done()
    assert sub.get(0).event_id == with_the_consumer
    sub.done()
    first = bus.emit("doorbell.ring").event_id
    assert seen == [(first, threading.get_ident())]
    assert sub.get(0).event_id == first  # queued as well
    sub.done()
    sub.express(None)
    bus.emit("doorbell.ring")
    assert len(seen) == 1


def test_an_express_hand_that_fails_leaves_the_event_to_the_consumer(caplog):
    bus = EventBus()
    bus.mark_never_drop("doorbell.ring")
    sub = bus.subscribe("link", "*")

    def broken(event):
        raise RuntimeError("paho is gone")
    sub.express(broken)
    ring = bus.emit("doorbell.ring").event_id
    assert sub.get(0).event_id == ring
    assert "link: express hand-over of doorbell.ring failed" in caplog.text


def test_event_id_is_carried_by_derived_events():
    bus = EventBus()
    sub = bus.subscribe("x", "doorbell.*")
    ring = bus.emit("doorbell.ring")
    bus.emit("doorbell.visitor", {"faces": []}, event_id=ring.event_id)
    assert sub.get(0).event_id == sub.get(0).event_id == ring.event_id


def test_events_are_stamped_with_the_bus_clock_not_the_system_clock():
    clock = FakeClock(start=50.0, wall=1_700_000_000.0)
    bus = EventBus(clock)
    ring = bus.emit("doorbell.ring")
    clock.advance(0.25)
    clock.jump_wall(3600)  # an NTP step between the press and the answer changes no latency
    assert (ring.ts_mono, ring.ts_wall) == (50.0, 1_700_000_000.0)
    assert clock.monotonic() - ring.ts_mono == pytest.approx(0.25)


def test_breaker_opens_after_threshold_and_half_opens_after_timeout():
    clock = FakeClock()
    b = CircuitBreaker("broker", failure_threshold=3, reset_timeout=5, clock=clock)
    for _ in range(3):
        b.record_failure(ConnectionRefusedError("refused"))
    assert b.state == OPEN and not b.allow()
    with pytest.raises(BreakerOpen):
        b.call(lambda: 1)
    clock.advance(4.9)
    assert not b.allow() and b.state == OPEN
    clock.advance(0.1)
    assert b.call(lambda: "ok") == "ok"  # the trial call
    assert b.state == CLOSED


def test_half_open_breaker_admits_a_single_trial_until_it_succeeds():
    clock = FakeClock()
    b = CircuitBreaker("camera", failure_threshold=1, reset_timeout=5, clock=clock)
    b.record_failure("unplugged")
    clock.advance(5)
    assert b.allow() and b.state == HALF_OPEN  # the first caller takes the trial
    assert [b.allow() for _ in range(3)] == [False, False, False]  # everyone else waits for it
    with pytest.raises(BreakerOpen):
        b.call(lambda: "second caller")
    b.record_success()
    assert b.state == CLOSED and b.allow() and b.allow()


def test_half_open_trial_that_fails_reopens_and_lets_nobody_through():
    clock = FakeClock()
    b = CircuitBreaker("camera", failure_threshold=1, reset_timeout=5, clock=clock)
    b.record_failure("unplugged")
    clock.advance(5)
    assert b.allow()
    assert not b.allow()
    b.record_failure("still unplugged")
    assert b.state == OPEN and not b.allow()


def test_abandoned_half_open_trial_is_handed_to_the_next_caller_after_a_reset_timeout():
    clock = FakeClock()
    b = CircuitBreaker("serial", failure_threshold=1, reset_timeout=5, clock=clock)
    b.record_failure("unplugged")
    clock.advance(5)
    assert b.allow()  # ...and that caller never reports back
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow() and not b.allow()


def test_reading_breaker_state_has_no_side_effects_on_state_or_health():
    clock = FakeClock()
    changes = []
    b = CircuitBreaker("netbox", failure_threshold=1, reset_timeout=5, clock=clock,
                       on_change=lambda br: changes.append(br.state))
    b.record_failure("down")
    clock.advance(60)
    for _ in range(5):  # a metrics scrape, a health poll, a snapshot
        assert b.state == OPEN
        assert b.snapshot()["state"] == OPEN
    assert changes == [OPEN] and b.retry_in() == 0.0
    assert b.allow()  # the transition happens when a caller takes the trial
    assert changes == [OPEN, HALF_OPEN]


def test_breaker_reopens_with_growing_timeout_while_dependency_stays_down():
    clock = FakeClock()
    b = CircuitBreaker("camera", failure_threshold=1, reset_timeout=5, clock=clock)
    b.record_failure("unplugged")
    clock.advance(5)
    assert b.allow() and b.state == HALF_OPEN
    b.record_failure("still unplugged")
    clock.advance(5)
    assert not b.allow() and b.state == OPEN  # the second open lasts 10 s
    assert b.retry_in() == 5.0
    clock.advance(5)
    assert b.allow() and b.state == HALF_OPEN


def test_breaker_ignores_wall_clock_jumps():
    clock = FakeClock()
    b = CircuitBreaker("netbox", failure_threshold=1, reset_timeout=60, clock=clock)
    b.record_failure("down")
    clock.jump_wall(10**9)
    assert b.state == OPEN


def test_backoff_grows_exponentially_with_bounded_jitter():
    backoff = Backoff(initial=1, maximum=30, factor=2, jitter=0.5)
    rng = random.Random(1)
    delays = [backoff.delay(n, rng) for n in range(8)]
    for n, d in enumerate(delays):
        base = min(30, 2 ** n)
        assert base * 0.5 <= d <= base
    assert Backoff(initial=1, maximum=30, jitter=0).delay(10) == 30
