"""The door call against real peers: a baresip house phone that answers and keys the code
(RFC 4733 telephone-events), SIPp peers that are busy or never answer, through a real
kamailio proxy with digest authentication."""

from __future__ import annotations

import time

from edge.testing.ports import free_port
from edge.testing.waiting import wait_for
from services.doorbell.testing import on_seconds
from services.sip.backend import REGISTERED
from sip.conftest import sip_worker


def audit_actions(bell):
    return [(r["actor"], r["action"], r["event_id"]) for r in bell.runtime.audit.records()]


def ready_door(make_door, **sip):
    bell = make_door(**sip)
    wait_for(lambda: sip_worker(bell).line_state == REGISTERED, 10, message="the door's line to register")
    return bell


def ring(bell):
    bell.press()
    return bell.wait_event("doorbell.ring")


def test_answered_call_and_the_code_open_the_door_once_audited_with_the_rings_event_id(house_phones, make_door):
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, open_code="#9")
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    house.send_dtmf("#9")
    opened = bell.wait_event("sip.door_opened", event_id=pressed.event_id)
    assert opened.data["by"].startswith("sip:house@")
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)  # hung up after the opening
    assert call.data["result"] == "answered" and call.data["door_opened"] is True
    assert call.data["ended_by"] == "door_opened"
    house.wait_event("CALL_CLOSED")
    assert len(on_seconds(bell.relay)) == 1
    assert audit_actions(bell) == [("sip", "door_open_requested", pressed.event_id),
                                   ("sip", "door_opened", pressed.event_id)]


def test_wrong_codes_are_counted_open_nothing_and_end_the_call(house_phones, make_door):
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, open_code="#9", max_wrong_codes=2)
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    house.send_dtmf("1")
    house.send_dtmf("#8")
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["wrong_codes"] == 2 and call.data["ended_by"] == "wrong_codes"
    assert call.data["door_opened"] is False
    assert on_seconds(bell.relay) == [] and audit_actions(bell) == []


def test_busy_moves_on_to_the_next_target(sipp_peers, house_phones, make_door):
    busy = sipp_peers("busy", "office")
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, targets=["office", "house"])
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    assert busy.wait() == 0  # SIPp saw the INVITE, answered 486 and got the ACK
    house.hangup()
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert [t["result"] for t in call.data["targets"]] == ["busy", "answered"]
    assert call.data["targets"][0]["code"] == 486


def test_no_answer_is_cancelled_after_the_ring_timeout(sipp_peers, make_door):
    silent = sipp_peers("no_answer", "garage")
    bell = ready_door(make_door, targets=["garage"], ring_timeout_s=1.5)
    pressed = ring(bell)
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["result"] == "no_answer"
    assert silent.wait() == 0  # SIPp's scenario passes only when a CANCEL came


def test_a_ring_group_rings_everyone_and_the_first_to_answer_takes_the_call(sipp_peers, house_phones, make_door):
    silent = sipp_peers("no_answer", "garage")
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, targets=["garage", "house"], ring_group=True)
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    states = bell.runtime.states
    wait_for(lambda: states.get("sip.call_state") == "in_call", 5, message="Home Assistant's call state")
    assert silent.wait() == 0  # the one still ringing was cancelled
    bell.press()  # a second press during the call: reported on it, no second call
    second = bell.wait_event("sip.press_during_call")
    assert second.data["call_event_id"] == pressed.event_id
    time.sleep(0.3)  # the visitor and the house talk: long enough that the call's duration shows
    house.hangup()
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["target"].startswith("sip:house@") and len(call.data["presses"]) == 1
    assert len(bell.events("sip.call")) == 1
    wait_for(lambda: states.get("sip.call_state") == "idle", 5, message="the call state back to idle")
    assert states.get("sip.last_call")["result"] == "answered"
    assert states.get("sip.last_call_duration_s") == call.data["duration_s"] >= 0.2


def test_cancelling_a_ring_group_target_that_never_rang_leaves_the_answered_call_up(kamailio, house_phones,
                                                                                    make_door):
    """The "ghost" target gets only 100 Trying (nothing listens where the proxy sends it), so
    no event has told the door its call's id. Cancelling it once the house answered must not
    end the house's call: baresip's `hangup` without a found call ends the current one."""
    kamailio.routes["ghost"] = free_port()
    kamailio.stop()
    kamailio.start()
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, targets=["ghost", "house"], ring_group=True, ring_timeout_s=8, max_talk_s=5)
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=20)
    assert call.data["result"] == "answered" and call.data["ended_by"] == "max_talk", call.data
    assert call.data["duration_s"] >= 5, call.data


def test_the_code_sent_as_sip_info_opens_the_door_too(sipp_peers, make_door):
    peer = sipp_peers("answer_info_dtmf", "porch")
    bell = ready_door(make_door, targets=["porch"], open_code="#9")
    pressed = ring(bell)
    bell.wait_event("sip.door_opened", event_id=pressed.event_id)
    assert peer.wait() == 0  # it got the door's BYE after hangup_after_open_s
    assert len(on_seconds(bell.relay)) == 1


def tone_power(samples, rate: int, freq: float) -> float:
    """Goertzel's power of `freq` in `samples`."""
    import numpy as np
    n = np.arange(len(samples))
    return float(abs(np.sum(samples * np.exp(-2j * np.pi * freq * n / rate))) ** 2)


def test_whoever_answers_hears_the_announcement_then_the_door(tmp_path, house_phones, make_door):
    import wave

    import numpy as np

    announcement = tmp_path / "at-the-door.wav"
    with wave.open(str(announcement), "wb") as out:  # one second of 1 kHz: "someone is at the door"
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes((8000 * np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)).astype("<i2").tobytes())
    house = house_phones("house", record=True)
    house.wait_registered()
    bell = ready_door(make_door, announcement=str(announcement))  # its microphone: the 440 Hz sim tone
    ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    heard_bytes = 44 + 2 * 8000 * 2.5
    wait_for(lambda: house.heard().stat().st_size >= heard_bytes, 10, message="2.5 s heard by the house phone")
    house.hangup()
    house.wait_event("CALL_CLOSED")
    with wave.open(str(house.heard())) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(float)
    first, later = samples[int(0.2 * rate):int(0.8 * rate)], samples[int(1.6 * rate):int(2.4 * rate)]
    assert tone_power(first, rate, 1000) > 10 * tone_power(first, rate, 440)   # the announcement
    assert tone_power(later, rate, 440) > 10 * tone_power(later, rate, 1000)   # then the door's microphone


def test_an_answer_that_crosses_the_cancel_is_acked_and_hung_up(sipp_peers, make_door):
    late = sipp_peers("answer_crossing_cancel", "attic")
    bell = ready_door(make_door, targets=["attic"], ring_timeout_s=1)
    pressed = ring(bell)
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["result"] == "no_answer"  # the answer came too late to be taken
    assert late.wait() == 0  # SIPp's scenario passes only with the door's ACK and BYE


def test_the_door_ends_a_call_at_the_maximum_talk_time_and_the_phone_sees_the_bye(house_phones, make_door):
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, max_talk_s=5)
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=15)
    assert call.data["result"] == "answered" and call.data["ended_by"] == "max_talk", call.data
    assert 5 <= call.data["duration_s"] < 10, call.data
    house.wait_event("CALL_CLOSED")  # the door's BYE reached the phone


def test_a_restart_of_the_intercom_mid_call_hangs_the_call_up_with_a_bye(house_phones, make_door):
    """Home Assistant's "restart worker" during a call: the intercom leaves run() and baresip
    quits (BYE), instead of being killed and leaving the phone in a dead call."""
    house = house_phones("house")
    house.wait_registered()
    bell = ready_door(make_door, max_talk_s=60)
    pressed = ring(bell)
    house.wait_event("CALL_ESTABLISHED")
    wait_for(lambda: bell.runtime.states.get("sip.call_state") == "in_call", 5, message="the door to be in the call")
    runner = bell.runtime.supervisor.runner("sip")
    assert bell.runtime.supervisor.restart("sip")
    house.wait_event("CALL_CLOSED", timeout=10)  # the door's BYE
    wait_for(lambda: runner.restarts == 1, 10, message="the intercom to restart")
    call = bell.wait_event("sip.call", event_id=pressed.event_id, timeout=10)
    assert call.data["result"] == "answered" and call.data["ended_by"] == "stop", call.data
