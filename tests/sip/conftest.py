"""Fixtures of the intercom tests: a real kamailio (registrar and proxy with digest
authentication and a short granted expiry), real baresip house phones, and a simulated
doorbell running the real intercom worker, all on 127.0.0.1 and free ports."""

from __future__ import annotations


import pytest

from edge.testing.requirements import require_program
from edge.testing.waiting import wait_for
from services.doorbell.testing import NO_FACES, doorbells
from services.doorbell.worker import DoorbellWorker
from services.sip.backend import REGISTERED
from services.sip.baresip import free_sip_port
from services.sip.testing import HousePhone, Kamailio, Sipp
from services.sip.worker import SipWorker

DOOR_PASSWORD, HOUSE_PASSWORD = "door-secret-7", "house-secret-9"
GRANTED_EXPIRES_S = 3


@pytest.fixture
def programs():
    require_program("kamailio", "kamailio")
    require_program("baresip", "baresip-core")


@pytest.fixture
def kamailio(tmp_path, programs):
    """kamailio with the door's and two house phones' accounts; routes to SIPp peers are
    added by tests that need them (`kamailio.routes`, then `restart()`)."""
    server = Kamailio(tmp_path / "kamailio", {"door": DOOR_PASSWORD, "house": HOUSE_PASSWORD,
                                              "kitchen": HOUSE_PASSWORD},
                      max_expires=GRANTED_EXPIRES_S)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def house_phones(tmp_path, kamailio):
    """`make(user, **options)` starts a baresip house phone registered at kamailio."""
    phones = []

    def make(user="house", **options):
        phone = HousePhone(tmp_path / f"phone-{user}", user, HOUSE_PASSWORD, kamailio.port, **options).start()
        phones.append(phone)
        return phone
    yield make
    for phone in phones:
        phone.stop()


def sip_config(kamailio: Kamailio, **sip) -> dict:
    """The doorbell and intercom sections of a test device against `kamailio`."""
    return {**NO_FACES,
            "doorbell": {"allow_remote_open": True, "cooldown_s": 0, "relay_pulse_s": 0.3},
            "sip": {"enabled": True, "registrar": f"127.0.0.1:{kamailio.port}", "username": "door",
                    "listen": f"127.0.0.1:{free_sip_port()}", "targets": ["house"], "ring_timeout_s": 3,
                    "max_talk_s": 20, "register_expires_s": 60, "retry_min_s": 0.3, "retry_max_s": 1.0,
                    "digit_timeout_s": 2, "hangup_after_open_s": 0.5, **sip}}


@pytest.fixture
def make_door(tmp_path, kamailio):
    """`make_door(password=..., **sip)` starts a simulated doorbell with the intercom."""
    with doorbells(tmp_path / "devices") as make:
        def door(password: str = DOOR_PASSWORD, **sip):
            bell = make(sip_config(kamailio, **sip), classes=(DoorbellWorker, SipWorker),
                        watch=("doorbell.*", "sip.*", "faces.*"), env={"EDGE_SIP_PASSWORD": password})
            return bell
        yield door


def sip_worker(bell) -> SipWorker:
    return bell.runtime.supervisor.runner("sip").worker


def in_call(house_phones, make_door, **sip):
    """A registered house phone, a door (with `sip` settings) whose line is registered, a
    press, and the two in the call it started: (door, house phone, the ring)."""
    house = house_phones("house")
    house.wait_registered()
    bell = make_door(**sip)
    wait_for(lambda: sip_worker(bell).line_state == REGISTERED, 10, message="the door's line to register")
    bell.press()
    pressed = bell.wait_event("doorbell.ring")
    house.wait_event("CALL_ESTABLISHED")
    wait_for(lambda: sip_worker(bell).status()["call_state"] == "in_call", 5, message="the door to be in the call")
    return bell, house, pressed


@pytest.fixture
def sipp_peers(tmp_path, kamailio):
    """`make(scenario, extension)` starts SIPp answering as `extension`, routed to by
    kamailio (which is restarted with the new route)."""
    require_program("sipp", "sip-tester")
    peers = []

    def make(scenario: str, extension: str) -> Sipp:
        peer = Sipp(tmp_path / f"sipp-{extension}", scenario).start()
        peers.append(peer)
        kamailio.routes[extension] = peer.port
        kamailio.stop()
        kamailio.start()
        return peer
    yield make
    for peer in peers:
        peer.stop()
