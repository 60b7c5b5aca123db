"""Store-and-forward under real failures: a silent network partition (a proxy that stops
forwarding without closing anything), a broker restart, and kill -9 of the runtime while a
PUBLISH is held in flight. Nothing is lost; first arrivals keep their order; duplicates come
only from messages that were unacknowledged at the cut."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

from edge.bus import Subscription
from edge.store import DB_NAME
from edge.testing.mosquitto import Mosquitto
from edge.testing.requirements import require_program
from edge.testing.tcp_proxy import TcpProxy
from edge.testing.waiting import wait_for
from mqtt.helpers import NODE, link_of, running_runtime, wait_connected, wait_outbox_empty
from runtime_helpers import edge_env, running_edge

BASE = f"edge/{NODE}"
STATUS = f"{BASE}/status"
EVENTS = f"{BASE}/event/#"


def event_ids(rec) -> list[str]:
    return [json.loads(payload)["event_id"] for _, _, payload, _ in rec.of(prefix=f"{BASE}/event/")]


def first_arrivals(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]


def outbox_rows(state_dir: Path, where: str = "1") -> list[tuple]:
    """What the runtime's outbox holds, read from its SQLite file (WAL: readers do not block it)."""
    conn = sqlite3.connect(f"file:{state_dir / DB_NAME}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT event_id, inflight, attempts FROM outbox WHERE {where} ORDER BY id").fetchall()
    finally:
        conn.close()


def test_partition_fires_the_last_will_and_1000_events_arrive_in_order_after_it(tmp_path, roomy_broker, recorders):
    mosquitto = roomy_broker
    rec = recorders(mosquitto.port, f"{BASE}/#", "homeassistant/#")  # straight on the broker, not through the proxy
    state = tmp_path / "state"
    with TcpProxy(mosquitto.port) as proxy, \
            running_runtime(state, proxy.port, env={"EDGE_MQTT_KEEPALIVE_S": "1"}) as rt:
        link = wait_connected(rt)
        rec.wait_latest(STATUS, b"online")
        before = [rt.bus.emit("test.tick", {"n": -i}).event_id for i in range(1, 11)]
        wait_for(lambda: len(event_ids(rec)) == 10, 10, message="events before the cut")
        wait_outbox_empty(rt)  # and their PUBACKs are back

        proxy.pause()  # both directions: no socket is closed, nothing moves
        ids = [rt.bus.emit("test.tick", {"n": i}).event_id for i in range(1000)]
        # The broker hears nothing for 1.5 x keepalive and publishes the Last Will.
        rec.wait_latest(STATUS, b"offline", timeout=15)
        wait_for(lambda: not link.connected, 15, message="the link to notice the silence")
        wait_for(lambda: rt.breakers.get("mqtt").state != "closed", 5, message="the mqtt breaker to open")
        wait_for(lambda: link.outbox.counts()["pending"] + link.outbox.counts()["inflight"] == 1000, 10,
                 message="all 1000 events in the outbox")
        in_flight_at_cut = {row[0] for row in outbox_rows(state, "inflight = 1")}
        assert 0 < len(in_flight_at_cut) <= 100  # [mqtt] max_inflight
        assert event_ids(rec) == before  # nothing crossed the partition

        cut = len(rec.of())
        proxy.resume()
        rec.wait_latest(STATUS, b"online", timeout=15)
        wait_for(lambda: set(ids) <= set(event_ids(rec)), 30, message="all 1000 events after the partition")
        arrived = event_ids(rec)
        assert first_arrivals(arrived) == before + ids
        duplicates = {i for i in arrived if arrived.count(i) > 1}
        assert duplicates <= in_flight_at_cut
        wait_outbox_empty(rt)
        assert rt.supervisor.runner("mqtt").restarts == 0

        # The reconnect announces itself like the first connect: online, discovery, worker
        # statuses, states; only then do events beyond those in flight at the cut resume.
        after = rec.of()[cut:]
        online = next(i for i, m in enumerate(after) if m[1] == STATUS and m[2] == b"online")
        config = next(i for i, m in enumerate(after) if m[1].startswith("homeassistant/"))
        status = next(i for i, m in enumerate(after) if m[1] == f"{BASE}/mqtt/status")
        state = next(i for i, m in enumerate(after) if m[1].startswith(f"{BASE}/state/"))
        fresh = next(i for i, m in enumerate(after) if m[1].startswith(f"{BASE}/event/")
                     and json.loads(m[2])["event_id"] not in in_flight_at_cut)
        assert online < config < status < state < fresh


def test_a_ring_that_finds_nothing_waiting_reaches_the_broker_while_another_write_holds_the_store(
        tmp_path, mosquitto, recorders):
    """A ring does not queue behind another thread's commit (the doorbell recording it, a
    visitor's record): it is handed to the broker at once, its outbox row is written when the
    store is free, and the PUBACK that came first then deletes it."""
    rec = recorders(mosquitto.port, EVENTS)
    state = tmp_path / "state"
    with running_runtime(state, mosquitto.port) as rt:
        link = wait_connected(rt)
        warm = rt.bus.emit("test.tick", {}).event_id
        wait_for(lambda: warm in event_ids(rec), 10, message="a first event")
        wait_outbox_empty(rt)
        held, release = threading.Event(), threading.Event()

        def hold_the_store():
            with rt.store.exclusive():  # what another thread's write in progress holds
                held.set()
                release.wait(30)
        holder = threading.Thread(target=hold_the_store)
        holder.start()
        try:
            assert held.wait(5)
            ring = rt.bus.emit("doorbell.ring", {"event_type": "ring"}).event_id
            wait_for(lambda: ring in event_ids(rec), 10, message="the ring at the broker while the store is held")
            assert not outbox_rows(state)  # its row is not written yet
        finally:
            release.set()
            holder.join(10)
        wait_for(lambda: not outbox_rows(state), 10, message="its row written, then deleted by the PUBACK")
        wait_for(lambda: link.events.counts["pending"] == link.events.counts["inflight"] == 0, 10,
                 message="the cached counts to show nothing waiting")
        assert event_ids(rec).count(ring) == 1


def test_a_ring_goes_out_at_once_while_the_pump_handles_the_acks_of_earlier_events(tmp_path, mosquitto, recorders):
    """With nothing unsent the pump has nothing to send, and does not read the outbox while
    it holds the send lock: a ring that came while it did (a visitor's events and their
    PUBACKs keep it busy) would have waited in the outbox behind that read."""
    rec = recorders(mosquitto.port, EVENTS)
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        link = wait_connected(rt)
        warm = rt.bus.emit("test.tick", {}).event_id
        wait_for(lambda: warm in event_ids(rec), 10, message="a first event")
        wait_outbox_empty(rt)
        outbox, reads, release = link.events.outbox, [], threading.Event()
        read = outbox.peek

        def slow_read(limit):  # a read stuck behind a slow SD card
            reads.append(limit)
            release.wait(30)
            return read(limit)
        outbox.peek = slow_read
        try:
            visitor = rt.bus.emit("test.tick", {"visitor": "obama"}).event_id
            wait_for(lambda: visitor in event_ids(rec), 10, message="the visitor event")
            wait_for(lambda: not outbox_rows(tmp_path / "state"), 10, message="its PUBACK applied by the pump")
            ring = rt.bus.emit("doorbell.ring", {"event_type": "ring"}).event_id
            wait_for(lambda: ring in event_ids(rec), 10, message="the ring at the broker at once")
        finally:
            release.set()
            outbox.peek = read
        assert reads == []


def test_a_ring_reaches_the_broker_from_the_pressing_thread_while_the_ingest_thread_is_held(
        tmp_path, mosquitto, recorders, monkeypatch):
    """The express lane: a never-drop event that nothing waits before is handed to paho in
    the thread that raised it, without waiting for the ingest thread to wake; that thread
    still writes its row (in flight, then acknowledged), and the broker gets it once."""
    rec = recorders(mosquitto.port, EVENTS)
    with running_runtime(tmp_path / "state", mosquitto.port) as rt:
        rt.bus.mark_never_drop("doorbell.ring")
        link = wait_connected(rt)
        held, release = threading.Event(), threading.Event()
        get = Subscription.get

        def held_get(sub, timeout=None):  # the ingest thread, late to wake
            event = get(sub, timeout)
            if sub.name == link.name and event is not None and event.kind == "doorbell.ring":
                held.set()
                release.wait(30)
            return event
        monkeypatch.setattr(Subscription, "get", held_get)
        warm = rt.bus.emit("test.tick", {}).event_id  # the ingest thread's next wait is the held one
        wait_for(lambda: warm in event_ids(rec), 10, message="a first event")
        wait_outbox_empty(rt)
        try:
            ring = rt.bus.emit("doorbell.ring", {"event_type": "ring"}).event_id
            wait_for(held.is_set, 10, message="the ingest thread to take the ring")
            wait_for(lambda: ring in event_ids(rec), 10, message="the ring at the broker while the ingest thread is held")
            assert outbox_rows(tmp_path / "state", f"event_id = '{ring}'") == []  # its row comes later
        finally:
            release.set()
        wait_outbox_empty(rt)
        assert event_ids(rec).count(ring) == 1


def test_events_raised_while_a_backlog_drains_come_after_it(tmp_path, mosquitto, recorders):
    """An event is handed over at once only when nothing waits before it: while the events of
    an outage are still going out, new ones queue behind them; rings too, which take the
    express lane only when nothing is unsent."""
    rec = recorders(mosquitto.port, EVENTS)
    with TcpProxy(mosquitto.port) as proxy, \
            running_runtime(tmp_path / "state", proxy.port, env={"EDGE_MQTT_KEEPALIVE_S": "1",
                                                                  "EDGE_MQTT_MAX_INFLIGHT": "5"}) as rt:
        rt.bus.mark_never_drop("doorbell.ring")

        def emit(n: int) -> str:
            return rt.bus.emit("doorbell.ring" if n % 3 == 0 else "test.tick", {"n": n}).event_id
        link = wait_connected(rt)
        proxy.pause()
        ids = [emit(i) for i in range(300)]
        wait_for(lambda: not link.connected, 15, message="the link to notice the silence")
        proxy.resume()
        backlog = set(ids)
        deadline = time.monotonic() + 60
        while not backlog <= set(event_ids(rec)):  # one more each time the drain moves (5 in flight at most)
            assert time.monotonic() < deadline, f"backlog events never sent: {sorted(backlog - set(event_ids(rec)))}"
            arrived = len(event_ids(rec))
            ids.append(emit(len(ids)))
            wait_for(lambda: len(event_ids(rec)) > arrived or backlog <= set(event_ids(rec)), 20,
                     message="the drain to move on")
        ids += [emit(len(ids) + i) for i in range(20)]  # and after it
        wait_for(lambda: set(ids) <= set(event_ids(rec)), 30, message="every event")
        assert first_arrivals(event_ids(rec)) == ids
        assert len(ids) > 320  # some were raised while the backlog drained
        wait_outbox_empty(rt)


def test_lost_pubacks_are_the_only_source_of_duplicates(tmp_path, mosquitto, recorders):
    """Hold only broker → node: the broker gets every PUBLISH, the node no PUBACK. After the
    reconnect exactly the unacknowledged ones come again, and nothing else."""
    rec = recorders(mosquitto.port, EVENTS)
    state = tmp_path / "state"
    env = {"EDGE_MQTT_KEEPALIVE_S": "1", "EDGE_MQTT_MAX_INFLIGHT": "20"}
    with TcpProxy(mosquitto.port) as proxy, running_runtime(state, proxy.port, env=env) as rt:
        link = wait_connected(rt)
        proxy.pause("down")
        ids = [rt.bus.emit("test.tick", {"n": i}).event_id for i in range(50)]
        wait_for(lambda: len(event_ids(rec)) == 20, 10, message="the first window to reach the broker")
        wait_for(lambda: not link.connected, 15, message="the link to give up on the silent broker")
        unacked = {row[0] for row in outbox_rows(state, "inflight = 1")}
        assert unacked == set(ids[:20])
        proxy.resume()
        wait_for(lambda: set(ids) <= set(event_ids(rec)), 20, message="every event")
        arrived = event_ids(rec)
        assert first_arrivals(arrived) == ids
        assert {i for i in arrived if arrived.count(i) > 1} == unacked
        wait_outbox_empty(rt)


def test_broker_restart_loses_nothing(tmp_path, recorders):
    program = require_program("mosquitto")
    workdir = tmp_path / "broker"
    # Persistence, and a subscriber with a persistent session: what the broker accepted
    # while the subscriber was away is kept for it across the restart.
    conf = "user root\nmax_queued_messages 0\n"  # root: mosquitto would drop to its own user, unable to save here
    broker = Mosquitto(workdir, program=program, persistence=True, extra_conf=conf).start()
    port = broker.port
    try:
        rec = recorders(port, EVENTS, client_id="ha-durable", clean=False)
        with running_runtime(tmp_path / "state", port) as rt:
            wait_connected(rt)
            ids = [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(100)]
            broker.stop()
            wait_for(lambda: not link_of(rt).connected, 10, message="the link to notice")
            ids += [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(100, 300)]
            broker = Mosquitto(workdir, program=program, port=port, persistence=True, extra_conf=conf).start()
            ids += [rt.bus.emit("visitor.seen", {"n": i}).event_id for i in range(300, 400)]
            wait_for(lambda: set(ids) <= set(event_ids(rec)), 30, message="all 400 events after the restart")
            assert first_arrivals(event_ids(rec)) == ids
            wait_outbox_empty(rt)
    finally:
        broker.stop()


def _emit(state_dir: Path, kind: str) -> str:
    base = (state_dir / "endpoint").read_text().strip()
    req = urllib.request.Request(f"{base}/sim/emit", data=json.dumps({"kind": kind}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())["result"]["event_ids"][0]


def test_kill_9_with_a_publish_in_flight_delivers_it_after_restart(tmp_path, mosquitto, recorders):
    rec = recorders(mosquitto.port, STATUS, EVENTS)
    state = tmp_path / "state"
    with TcpProxy(mosquitto.port) as proxy:
        env = edge_env(state, EDGE_MQTT_ENABLED="true", EDGE_MQTT_HOST="127.0.0.1", EDGE_MQTT_PORT=proxy.port,
                       EDGE_NODE_ID=NODE, EDGE_MQTT_KEEPALIVE_S="5", EDGE_MQTT_RECONNECT_MIN_S="0.1",
                       EDGE_MQTT_RECONNECT_MAX_S="0.5", EDGE_SYSTEM_ENABLED="false")
        (tmp_path / "run1").mkdir()
        with running_edge(tmp_path / "run1", env) as (proc, _):
            rec.wait_latest(STATUS, b"online", timeout=20)
            proxy.pause("up")  # the PUBLISH leaves the node and waits at the proxy
            event_id = _emit(state, "doorbell.ring")
            wait_for(lambda: outbox_rows(state, f"event_id = '{event_id}' AND inflight = 1"), 10,
                     message="the ring to be in flight")
            proc.kill()
            proc.wait(10)
        proxy.drop_connections()  # what the dead process sent is gone with its connection
        proxy.resume()
        assert event_id not in event_ids(rec)

        (tmp_path / "run2").mkdir()
        with running_edge(tmp_path / "run2", env) as (proc, _):
            wait_for(lambda: event_id in event_ids(rec), 20, message="the ring after the restart")
            wait_for(lambda: not outbox_rows(state), 10, message="the outbox to be empty (acknowledged)")
            proc.terminate()
            assert proc.wait(10) == 0
        rec.wait_latest(STATUS, b"offline")
