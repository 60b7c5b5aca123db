"""Fixtures for the MQTT link tests (helpers in helpers.py)."""

from __future__ import annotations

import pytest

from edge.testing.mosquitto import Mosquitto
from edge.testing.requirements import require_program
from mqtt.helpers import Recorder


@pytest.fixture
def recorders():
    made: list[Recorder] = []

    def make(port: int, *topics: str, **kw) -> Recorder:
        rec = Recorder(port, topics or ("#",), **kw)
        made.append(rec)
        return rec
    yield make
    for rec in made:
        rec.close()


@pytest.fixture
def roomy_broker(tmp_path):
    """mosquitto that queues any number of QoS 1 messages for a subscriber (its default of
    1000 would drop some of a burst at a subscriber that falls behind: not the link's doing)."""
    broker = Mosquitto(tmp_path / "roomy-broker", program=require_program("mosquitto"),
                       extra_conf="max_queued_messages 0\n").start()
    yield broker
    broker.stop()
