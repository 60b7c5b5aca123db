"""The door's line over TCP and TLS against a real kamailio (Debian's kamailio-tls-modules
for TLS, with a CA and server certificate for 127.0.0.1 made in the test): it registers
and places the door call over the configured transport, never over UDP.

What baresip 1.0 does with `tls_ca_file` (its sip_cafile) is tested too: it loads the CA but
does not check the registrar's certificate with it, so a certificate from another CA is
accepted (baresip issue #1122; verification came with baresip 1.1's sip_verify_server). The
config key's help text and the README say so; when a newer baresip verifies, that test
fails and the refusal becomes the case to test."""

from __future__ import annotations

import os

import pytest

from edge.testing.pki import make_pki
from edge.testing.requirements import missing
from edge.testing.waiting import wait_for
from services.sip.backend import REGISTERED
from services.sip.testing import Kamailio
from sip.conftest import DOOR_PASSWORD, GRANTED_EXPIRES_S, HOUSE_PASSWORD, in_call, sip_worker


@pytest.fixture
def pki(tmp_path):
    """Two CAs: `trusted` signed kamailio's certificate, `other` signed nothing it shows."""
    folders = {name: tmp_path / "pki" / name for name in ("trusted", "other")}
    for folder in folders.values():
        folder.mkdir(parents=True)
        make_pki(folder)
    return folders


@pytest.fixture
def kamailio(tmp_path, programs, pki):
    """The conftest's kamailio, also taking TLS with the trusted CA's server certificate."""
    if not os.path.exists(os.path.join(Kamailio.modules_dir(), "tls.so")):
        missing("kamailio's TLS module is not installed; install it with "
                "`sudo apt-get install kamailio-tls-modules`")
    server = Kamailio(tmp_path / "kamailio", {"door": DOOR_PASSWORD, "house": HOUSE_PASSWORD},
                      max_expires=GRANTED_EXPIRES_S, tls=(pki["trusted"] / "broker.pem", pki["trusted"] / "broker.key"))
    server.start()
    yield server
    server.stop()


def door_call_over(transport: str, house_phones, make_door, kamailio, **sip):
    """Registers the door over `transport`, rings the house phone through kamailio, and the
    house phone hangs up; every request of the door's reached kamailio over `transport`."""
    bell, house, pressed = in_call(house_phones, make_door, transport=transport, **sip)
    assert kamailio.requests("REGISTER", "door", transport) >= 2  # challenged (401), then with credentials
    assert kamailio.requests("INVITE", "door", transport) >= 2    # challenged (407), then with credentials
    house.hangup()
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["result"] == "answered" and call.data["ended_by"] == "answerer"  # its BYE reached the door
    assert kamailio.requests("REGISTER", "door", "udp") == kamailio.requests("INVITE", "door", "udp") == 0


def test_the_line_registers_and_places_the_door_call_over_tcp(house_phones, make_door, kamailio):
    door_call_over("tcp", house_phones, make_door, kamailio)


def test_the_line_registers_and_places_the_door_call_over_tls(house_phones, make_door, kamailio, pki):
    """With its own certificate (`tls_certificate`) the door also takes the TLS connection
    kamailio opens for the house phone's BYE (kamailio does not reuse the door's own)."""
    door_pem = pki["trusted"] / "door.pem"
    door_pem.write_text((pki["trusted"] / "client.pem").read_text() + (pki["trusted"] / "client.key").read_text())
    door_call_over("tls", house_phones, make_door, kamailio, registrar=f"127.0.0.1:{kamailio.tls_port}",
                   tls_ca_file=str(pki["trusted"] / "ca.pem"), tls_certificate=str(door_pem))


def test_baresip_1_0_accepts_a_registrar_certificate_from_another_ca(make_door, kamailio, pki):
    """Not what a careful client does, but what baresip 1.0 does: found by this test, said in
    the key's help text, in the config warning and in the README."""
    bell = make_door(transport="tls", registrar=f"127.0.0.1:{kamailio.tls_port}",
                     tls_ca_file=str(pki["other"] / "ca.pem"))
    wait_for(lambda: sip_worker(bell).line_state == REGISTERED, 10, message="the line to register over TLS")
    config = (bell.state_dir / "sip" / "config").read_text()
    assert "sip_cafile" in config and "sip_verify_server" in config  # asked for, and ignored by baresip 1.0
    assert kamailio.requests("REGISTER", "door", "tls") >= 2
