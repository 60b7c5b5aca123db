"""The intercom's child under stress: a stop during a call ends it with BYE, and a baresip
killed mid-call is restarted, the call reported as failed, and the line registered again."""

from __future__ import annotations

import os
import signal

from edge.testing.waiting import wait_for
from services.doorbell.testing import on_seconds
from services.sip.backend import REGISTERED
from sip.conftest import in_call, sip_worker


def test_stopping_the_device_during_a_call_sends_bye_and_un_registers(make_door, house_phones, kamailio):
    bell, house, pressed = in_call(house_phones, make_door)
    before = kamailio.requests("REGISTER", "door")
    pid = sip_worker(bell).backend.pid()
    bell.stop()  # the runtime's stop: what SIGTERM to `edge run` does
    closed = house.wait_event("CALL_CLOSED")
    assert "Connection reset by peer" in closed.get("param", "")  # the door's BYE
    assert kamailio.requests("BYE", "door") == 1
    assert kamailio.requests("REGISTER", "door") > before  # the un-REGISTER (Expires: 0)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_baresip_killed_mid_call_is_restarted_and_the_call_reported_failed(house_phones, make_door):
    bell, house, pressed = in_call(house_phones, make_door)
    worker = sip_worker(bell)
    old = worker.backend.pid()
    os.kill(old, signal.SIGKILL)
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["result"] == "answered" and "baresip ended mid-call" in call.data["reason"]
    wait_for(lambda: worker.backend.pid() not in (None, old), 10, message="baresip to be restarted")
    wait_for(lambda: worker.line_state == REGISTERED, 10, message="the line to register again")
    assert worker.restarts == 1


def test_a_network_change_restarts_baresip_and_the_line_registers_again(tmp_path, kamailio, monkeypatch):
    from services.doorbell.testing import doorbells
    from services.doorbell.worker import DoorbellWorker
    from services.sip import worker as sip_module
    from sip.conftest import DOOR_PASSWORD, sip_config

    addresses = {"eth0:192.0.2.10"}  # documentation addresses: nothing is sent to them

    class MovingSip(sip_module.SipWorker):
        def local_addresses(self):
            return frozenset(addresses)

    monkeypatch.setattr(sip_module, "NETWORK_CHECK_S", 0.1)
    with doorbells(tmp_path / "devices") as make:
        bell = make(sip_config(kamailio), classes=(DoorbellWorker, MovingSip), watch=("sip.*",),
                    env={"EDGE_SIP_PASSWORD": DOOR_PASSWORD})
        worker = sip_worker(bell)
        wait_for(lambda: worker.line_state == REGISTERED, 10, message="the line to register")
        first = worker.backend.pid()
        addresses.add("wlan0:192.0.2.77")
        wait_for(lambda: worker.backend.pid() not in (None, first), 10, message="baresip to be restarted")
        wait_for(lambda: worker.line_state == REGISTERED, 10, message="the line to register again")


def test_a_missing_baresip_is_reported_once_and_the_doorbell_rings_on(make_door, caplog):
    bell = make_door(program="baresip-not-installed", retry_min_s=0.2)
    worker = sip_worker(bell)
    wait_for(lambda: worker.line_state == "unreachable", 10, message="the start to fail")
    wait_for(lambda: bell.runtime.health.get("worker.sip").state == "DEGRADED", 5, message="DEGRADED")
    assert "apt-get install baresip-core" in bell.runtime.health.get("worker.sip").reason
    wait_for(lambda: worker._start_failures >= 3, 10, message="a few tries with a growing wait")
    assert sum("cannot run baresip-not-installed" in r.getMessage() for r in caplog.records) == 1
    bell.press()
    bell.wait_event("doorbell.ring")
    wait_for(lambda: on_seconds(bell.chime), 5, message="the chime to ring")
    assert bell.runtime.health.overall() != "FAILED"


def test_a_baresip_that_does_not_exit_after_quit_and_sigterm_is_killed(sipp_peers, make_door):
    silent = sipp_peers("no_answer", "garage")
    bell = make_door(targets=["garage"], ring_timeout_s=1)
    worker = sip_worker(bell)
    wait_for(lambda: worker.line_state == REGISTERED, 10, message="the door's line to register")
    bell.press()
    bell.wait_event("sip.call")  # cancelled: baresip now holds the INVITE transaction (Timer D, 32 s)
    assert silent.wait() == 0
    child = worker.backend.child
    bell.stop()
    assert not child.running
    assert child.health().last_exit == "killed by SIGKILL"
