"""The ctrl_tcp link against a fake server: framing, responses by token, events, and data
from the child that is malformed, truncated or not netstrings at all."""

from __future__ import annotations

import logging
import queue
import threading

import pytest

from edge.testing.ports import free_port
from services.sip.control import ControlError, ControlLink
from services.sip.netstring import NetstringDecoder, NetstringError, encode
from services.sip.testing import FakeControlServer

log = logging.getLogger("test.sip")


@pytest.fixture
def server():
    fake = FakeControlServer()
    yield fake
    fake.close()


@pytest.fixture
def link(server):
    link = ControlLink(server.port, log)
    link.connect(5)
    yield link
    link.close()


def next_event(link, timeout=5):
    try:
        return link.events.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no event arrived") from None


def test_decoder_joins_frames_split_across_reads_and_splits_frames_sharing_one():
    decoder = NetstringDecoder()
    assert decoder.feed(b"5:hel") == []
    assert decoder.feed(b"lo,3:abc,2") == [b"hello", b"abc"]
    assert decoder.pending == 1
    assert decoder.feed(b":hi,") == [b"hi"]
    assert encode(b"hello") == b"5:hello,"


@pytest.mark.parametrize("data, why", [
    (b"x5:hello,", "bad length prefix"),
    (b"5:hello;", "does not end with ','"),
    (b"99999999:", "bad length prefix"),
    (b"300000:", "over the"),
    (b"-1:", "bad length prefix"),
])
def test_decoder_rejects_streams_that_are_not_netstrings(data, why):
    with pytest.raises(NetstringError, match=why):
        NetstringDecoder().feed(data)


def test_command_gets_the_answer_with_its_own_token(server, link):
    server.answers["reginfo"] = (True, "OK")
    assert link.command("reginfo") == "OK"
    assert server.commands[-1]["command"] == "reginfo" and server.commands[-1]["token"]
    server.answers["dial"] = (False, "invalid URI")
    with pytest.raises(ControlError, match="refused 'dial': invalid URI"):
        link.command("dial", "nonsense")
    assert server.commands[-1]["params"] == "nonsense"


def test_an_unanswered_command_times_out_with_its_name(server, link):
    server.silent.add("dial")
    with pytest.raises(ControlError, match="did not answer 'dial' within 0.2 s"):
        link.command("dial", "sip:a@b", timeout_s=0.2)


def test_events_reach_the_queue_in_order(server, link):
    server.send_event("CALL_RINGING", id="c1", peeruri="sip:a@b")
    server.send_event("CALL_ESTABLISHED", id="c1", peeruri="sip:a@b")
    assert next_event(link)["type"] == "CALL_RINGING"
    assert next_event(link)["type"] == "CALL_ESTABLISHED"


def test_malformed_frames_are_counted_and_skipped_and_the_link_goes_on(server, link):
    server.send_raw(encode(b"{not json") + encode(b"[1, 2]") + encode(b'{"hello": 1}') + encode(b"\xff\xfe"))
    server.send_event("CALL_RINGING", id="c1")
    assert next_event(link)["type"] == "CALL_RINGING"
    assert link.malformed == 4
    assert link.connected
    assert link.command("reginfo") == ""


def test_an_answer_with_bytes_that_are_not_utf8_still_reaches_its_command(server, link):
    server.answers["reginfo"] = (True, b"Server: Standard-PBX \xe9t\xe9 (Latin-1)")
    assert link.command("reginfo", timeout_s=2) == "Server: Standard-PBX \ufffdt\ufffd (Latin-1)"
    assert link.malformed == 0


def test_a_stream_that_stops_being_netstrings_ends_the_link_with_the_reason(server, link):
    server.send_raw(b"12:{\"event\":1}XX")
    assert next_event(link) is None
    assert link.broken == 1 and not link.connected
    assert "not netstring-framed" in link.ended
    with pytest.raises(ControlError, match="no link to baresip"):
        link.command("reginfo")


def test_a_frame_cut_off_by_the_end_of_the_connection_is_counted_as_truncated(server, link):
    server.send_raw(b'40:{"event": true, "type": "CALL_')
    server.close_connection()
    assert next_event(link) is None
    assert link.truncated == 1
    assert link.ended == "baresip closed the control connection"


def test_a_command_waiting_when_the_link_ends_fails_at_once(server, link):
    server.silent.add("quit")
    threading.Timer(0.2, server.close_connection).start()
    with pytest.raises(ControlError, match="ended during 'quit'"):
        link.command("quit", timeout_s=5)


def test_connect_to_a_port_nobody_listens_on_says_so():
    link = ControlLink(free_port(), log)
    with pytest.raises(ControlError, match="did not accept a connection within 0.1 s"):
        link.connect(0.1)


def test_a_child_that_exits_while_starting_fails_the_connect_at_once_not_after_the_timeout():
    # baresip exits with 98 at once when a port it needs is taken: no use waiting 10 s.
    link = ControlLink(free_port(), log)
    with pytest.raises(ControlError, match=r"baresip exited \(exit code 98\) before its control port"):
        link.connect(600, exited=lambda: "exit code 98")
