"""The NetBox worker in its thread against the fake NetBox: triggers (start-up, facts
change, on demand), and what NetBox down, slow, 5xx, 429 and 403 do to its state, health and
breaker, and how it catches up when NetBox is back. Never a crash."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge.breaker import BreakerBoard, CLOSED, OPEN
from edge.bus import EventBus
from edge.clock import SYSTEM_CLOCK
from edge.config import SectionValues
from edge.health import DEGRADED, HealthRegistry
from edge.states import StateBoard
from edge.store import Store
from edge.testing.waiting import wait_for
from edge.worker import WorkerContext
from services.netbox.facts import Interface
from services.netbox.worker import LAST_SYNC_KEY, NetboxWorker

from netbox.helpers import netbox_config, only, tags_of

SAMPLES = Path(__file__).parent / "samples"


class RunningWorker:
    """The worker on a thread of its own, with a real store and state board."""

    def __init__(self, cfg, tmp_path: Path, states: dict | None = None, clock=SYSTEM_CLOCK):
        self.addresses = ["192.0.2.10/24"]
        self.worker = NetboxWorker(None, root=SAMPLES / "pi4", interfaces=self._interfaces)
        self.states = StateBoard()
        for key, value in (states or {"peripheral.printer": {"kind": "printer", "name": "Printer",
                                                               "state": "connected"}}).items():
            self.states.set(key, value)
        self.breakers = BreakerBoard(clock)
        self.store = Store(tmp_path / "edge.sqlite3")
        self.stopping = threading.Event()
        self.ctx = WorkerContext(self.worker, stopping=self.stopping, clock=clock, bus=EventBus(clock),
                                 store=self.store, breakers=self.breakers, health=HealthRegistry(), metrics=None,
                                 states=self.states, config=cfg, on_heartbeat=lambda: None,
                                 node=SectionValues("node", {"id": "front"}, {}))
        self.thread = threading.Thread(target=self.worker.run, args=(self.ctx,), name="netbox-test")
        self.thread.start()

    def _interfaces(self):
        return (Interface("eth0", "DC:A6:32:01:02:03", tuple(self.addresses)),)

    @property
    def state(self) -> dict:
        return self.states.get("netbox") or {}

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.ctx.close()
        self.store.close()
        assert not self.thread.is_alive()


@pytest.fixture
def running(fake, tmp_path):
    started = []

    def start(**cfg_values):
        cfg = netbox_config(fake, facts_check_s=0.1, **cfg_values)
        worker = RunningWorker(cfg, tmp_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def synced(worker, after: str | None = None):
    return lambda: worker.state.get("last_success") and worker.state.get("problem") is None and \
        worker.state.get("last_success") != after


def test_the_worker_syncs_at_start_up_and_keeps_the_last_sync_in_the_store(fake, running):
    worker = running()
    wait_for(synced(worker), timeout=15)
    device = only(fake, "dcim/devices", name="front-door")
    last = worker.store.kv_get(LAST_SYNC_KEY)
    assert last["device_id"] == device["id"] and last["time"] == worker.state["last_success"]
    assert {"device", "interface eth0", "MAC address DC:A6:32:01:02:03", "IP address 192.0.2.10/24",
            "inventory item Printer"} <= set(last["ids"])
    assert {i["name"] for i in fake.all("dcim/inventory-items")} == {"Printer"}
    assert worker.worker.health() is None and worker.breakers.get("netbox").state == CLOSED


def test_a_new_address_and_an_unplugged_printer_trigger_a_sync(fake, running):
    worker = running()
    wait_for(synced(worker), timeout=15)
    worker.addresses = ["192.0.2.20/24"]
    wait_for(lambda: any(ip["address"] == "192.0.2.20/24" for ip in fake.all("ipam/ip-addresses")), timeout=15)
    worker.states.set("peripheral.printer", {"kind": "printer", "name": "Printer", "state": "disconnected"})
    wait_for(lambda: "edge-stale" in tags_of(only(fake, "dcim/inventory-items", name="Printer")), timeout=15)


def test_an_on_demand_sync_runs_at_once(fake, running):
    worker = running()
    wait_for(synced(worker), timeout=15)
    fake.reset_counters()
    assert worker.ctx.commands.call("netbox_sync", {}, via="test") == {"queued": True}
    wait_for(lambda: fake.counters.requests >= 6, timeout=15)
    assert fake.counters.writes == 0, "nothing changed: only reads"


def test_netbox_down_is_degraded_with_the_reason_and_the_worker_catches_up(fake, running):
    fake.down()
    worker = running()
    wait_for(lambda: worker.state.get("problem") == "unreachable", timeout=15)
    state, reason = worker.worker.health()
    assert state == DEGRADED and "cannot reach NetBox" in reason
    assert worker.breakers.get("netbox").state == OPEN and worker.thread.is_alive()
    fake.up()
    wait_for(synced(worker), timeout=20)
    assert only(fake, "dcim/devices", name="front-door") and worker.worker.health() is None


def test_a_slow_netbox_times_out_instead_of_hanging_and_is_caught_up_with(fake, running):
    fake.delay_s = 2.0  # longer than the 0.5 s read timeout
    worker = running()
    wait_for(lambda: worker.state.get("problem") == "slow", timeout=20)
    assert "did not answer in time" in worker.worker.health()[1]
    fake.delay_s = 0.0
    wait_for(synced(worker), timeout=20)


def test_a_few_500s_are_retried_inside_the_call_and_many_make_it_degraded(fake, running):
    fake.fail_next(2, 500)
    worker = running()
    wait_for(synced(worker), timeout=15)  # two 500s, then answers: retried within the request
    first = worker.state["last_success"]
    fake.fail_next(50, 500)
    worker.addresses = ["192.0.2.30/24"]
    wait_for(lambda: worker.state.get("problem") == "server_error", timeout=15)
    fake.clear_failures()
    wait_for(lambda: any(ip["address"] == "192.0.2.30/24" for ip in fake.all("ipam/ip-addresses")), timeout=30)
    assert worker.state["last_success"] >= first


def test_429_with_a_short_retry_after_is_honoured_and_a_long_one_is_waited_out_by_the_worker(fake, running):
    fake.fail_next(1, 429, retry_after="1")
    worker = running()
    wait_for(synced(worker), timeout=15)
    (throttled, _, path, status, _), (again, _, path_again, _, _) = fake.log[:2]
    assert status == 429 and path_again == path and again - throttled >= 0.95, "waited the Retry-After"
    fake.reset_counters()
    fake.fail_next(1, 429, retry_after="3600")
    worker.ctx.commands.call("netbox_sync", {}, via="test")
    wait_for(lambda: worker.state.get("problem") == "rate_limited", timeout=15)
    assert "Retry-After 3600" in worker.state["reason"]
    assert fake.counters.requests == 1, "a long Retry-After is not retried inside the call"


def test_403_is_a_configuration_problem_and_not_retried_in_a_loop(fake, running):
    worker = running(token="a-revoked-token")
    wait_for(lambda: worker.state.get("problem") == "forbidden", timeout=15)
    assert "token_file" in worker.state["reason"] and worker.breakers.get("netbox").state == CLOSED
    count = fake.counters.requests
    worker.ctx.commands.call("netbox_sync", {}, via="test")
    wait_for(lambda: fake.counters.requests > count, timeout=15)
    wait_for(lambda: worker.state.get("problem") == "forbidden", timeout=15)
    # Each trigger is one attempt: the version probe and the first read, never a retry loop.
    assert fake.counters.requests - count <= 2


def test_a_netbox_version_outside_the_tested_range_is_refused_and_nothing_is_written(fake, running):
    fake.api_version = "4.6"
    worker = running()
    wait_for(lambda: worker.state.get("problem") == "unsupported", timeout=15)
    assert "4.6" in worker.state["reason"] and fake.counters.writes == 0


def test_a_conflict_is_reported_in_health_and_home_assistant(fake, running):
    from netbox.helpers import prerequisites
    refs = prerequisites(fake)
    fake.add("dcim/devices", name="a", serial="10000000a1b2c3d4", **refs)
    fake.add("dcim/devices", name="b", serial="10000000a1b2c3d4", **refs)
    worker = running()
    wait_for(lambda: worker.state.get("problem") == "conflict", timeout=15)
    assert worker.worker.health()[0] == DEGRADED and "2 devices" in worker.state["reason"]
    assert fake.counters.writes == 0, "nothing written through the API"


def test_a_periodic_sync_runs_every_interval_on_the_runtime_clock(fake, tmp_path):
    from edge.clock import FakeClock
    clock = FakeClock()
    cfg = netbox_config(fake, facts_check_s=0.1, interval_s=3600)
    worker = RunningWorker(cfg, tmp_path, clock=clock)
    try:
        wait_for(lambda: worker.state.get("reason") == "waiting for the first sync", timeout=10)
        clock.advance(0.2)  # the first sync waits one facts check
        wait_for(synced(worker), timeout=15)
        fake.reset_counters()
        clock.advance(3600)
        wait_for(lambda: fake.counters.requests >= 6, timeout=15, message="the periodic sync")
        assert fake.counters.writes == 0
    finally:
        worker.stop()


def test_a_hung_netbox_never_delays_the_doorbell(fake, tmp_path):
    from services.doorbell.testing import NO_FACES, doorbells
    from services.doorbell.worker import DoorbellWorker

    fake.delay_s = 60.0  # every answer hangs (released when the fake stops)
    netbox = {"enabled": True, "url": fake.url, "site": "home", "facts_check_s": 0.1, "connect_timeout_s": 0.5,
              "read_timeout_s": 0.5, "retries": 0}
    with doorbells(tmp_path) as make:
        bell = make({"netbox": netbox, "doorbell": {"cooldown_s": 0}, **NO_FACES},
                    classes=(DoorbellWorker, NetboxWorker), env={"EDGE_NETBOX_TOKEN": fake.token})
        bell.button.drive_low()
        assert bell.chime.state is True and len(bell.events("doorbell.ring")) == 1, "rang inside the press"
        bell.button.drive_high()
        wait_for(lambda: (bell.runtime.states.get("netbox") or {}).get("problem") == "slow", timeout=20)
        bell.button.drive_low()
        assert bell.chime.state is True and len(bell.events("doorbell.ring")) == 2, "NetBox degraded, the bell rings"
        bell.button.drive_high()
        assert bell.runtime.health.get("worker.doorbell").state == "OK"
        wait_for(lambda: bell.runtime.health.get("worker.netbox").state == DEGRADED, timeout=10)


def test_a_bug_in_one_sync_is_contained_reported_and_the_next_sync_works(fake, running):
    worker = running()
    worker.addresses = ["192.0.2.300/24"]  # not an address: the sync's own code raises
    wait_for(lambda: worker.state.get("problem") == "internal", timeout=15)
    assert worker.thread.is_alive() and worker.worker.health()[0] == DEGRADED
    worker.addresses = ["192.0.2.10/24"]
    wait_for(synced(worker), timeout=15)
    assert only(fake, "dcim/devices", name="front-door")


def test_a_sync_interrupted_mid_way_sends_no_further_request(fake, running):
    """The supervisor's interrupt (a stop, or a hang): the request in flight runs out, and the
    sync sends nothing after it instead of going on to its end."""
    fake.delay_s = 0.3  # each answer takes a while, inside the read timeout
    worker = running(read_timeout_s=5.0)
    wait_for(lambda: fake.counters.requests >= 2, timeout=20, message="a sync under way")
    worker.worker.interrupt()
    seen = fake.counters.requests
    worker.stopping.set()
    worker.thread.join(20)
    assert not worker.thread.is_alive()
    assert fake.counters.requests <= seen + 1  # at most one already on its way
    assert fake.all("dcim/devices") == []  # the sync did not get as far as the device
