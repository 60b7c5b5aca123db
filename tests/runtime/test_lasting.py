"""Objects that outlive worker restarts: a stop never waits for one being created, and one
that fails to close does not keep the others open."""

from __future__ import annotations

import threading

import pytest

from edge.testing.waiting import scaled
from edge.worker import Lasting, LastingClosed


def test_a_stop_while_an_object_is_being_created_does_not_wait_and_closes_it_once_made():
    # The simulator's broker: starting mosquitto and waiting for it can take many seconds
    # under emulation; a SIGTERM then must not wait for it, nor leave the child running.
    lasting = Lasting()
    entered, release, closed, outcome = threading.Event(), threading.Event(), [], {}

    def create():
        entered.set()
        release.wait(scaled(30))
        return "broker"

    def first_use():
        try:
            outcome["object"] = lasting.get("broker", create, close=closed.append)
        except LastingClosed as exc:
            outcome["error"] = exc
    creator = threading.Thread(target=first_use)
    creator.start()
    assert entered.wait(scaled(10))
    stopping = threading.Thread(target=lasting.close_all)
    stopping.start()
    stopping.join(scaled(10))
    try:
        assert not stopping.is_alive(), "close_all waited for an object still being created"
    finally:
        release.set()
        creator.join(scaled(10))
        stopping.join(scaled(10))
    assert closed == ["broker"] and "object" not in outcome
    assert "created after the runtime stopped" in str(outcome["error"])


def test_a_close_that_raises_does_not_keep_the_others_open(caplog):
    lasting, closed = Lasting(), []

    def refuse(name):
        raise RuntimeError(f"{name} would not stop")
    lasting.get("subscription", lambda: "subscription", close=closed.append)
    lasting.get("broker", lambda: "broker", close=refuse)
    lasting.get("printer", lambda: "printer", close=closed.append)
    lasting.close_all()
    assert closed == ["printer", "subscription"]  # newest first, past the one that raised
    assert "closing broker failed" in caplog.text and "broker would not stop" in caplog.text
    with pytest.raises(LastingClosed):
        lasting.get("late", lambda: "late")


def test_the_same_object_is_handed_to_every_user_and_created_once():
    lasting, made = Lasting(), []

    def create():
        made.append(1)
        return object()
    first = lasting.get("outbox", create)
    assert lasting.get("outbox", create) is first and lasting.peek("outbox") is first and len(made) == 1
