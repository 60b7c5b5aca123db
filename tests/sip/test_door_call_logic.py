"""One door call as pure logic on an exact clock: order of targets, ring group, timers,
outcomes by SIP code, and the open code with its inter-digit timeout."""

from __future__ import annotations

import pytest

from services.sip.backend import ANSWERED, DTMF, ENDED, RINGING, CallEvent
from services.sip.calls import (BUSY, DECLINED, FAILED, IDLE, IN_CALL, NO_ANSWER, CallSettings, Dial, DoorCall,
                                Finished, Hangup, OpenDoor)

A, B = "sip:a@pbx", "sip:b@pbx"


def door_call(*targets, **settings):
    call = DoorCall("ev1", CallSettings(tuple(targets) or (A,), **settings), 0.0)
    return call, call.start(0.0)


def ev(kind, peer=A, call_id=None, detail="", code=None):
    return CallEvent(kind, peer, call_id or f"id-{peer}", detail, code)


def answer(call, peer=A, now=1.0):
    call.on_event(ev(RINGING, peer), now - 0.5)
    return call.on_event(ev(ANSWERED, peer), now)


def finished(actions):
    return next(a.summary for a in actions if isinstance(a, Finished))


def test_targets_are_called_in_order_and_busy_moves_on():
    call, actions = door_call(A, B)
    assert actions == [Dial(A)]
    assert call.on_event(ev(ENDED, A, detail="486 Busy Here", code=486), 0.5) == [Dial(B)]
    answer(call, B, 2.0)
    summary = finished(call.on_event(ev(ENDED, B, detail="Connection reset by peer"), 12.0))
    assert summary["result"] == "answered" and summary["target"] == B and summary["duration_s"] == 10.0
    assert [t["result"] for t in summary["targets"]] == ["busy", "answered"]
    assert summary["ended_by"] == "answerer"


@pytest.mark.parametrize("code, result", [(486, BUSY), (600, BUSY), (603, DECLINED), (404, FAILED), (480, FAILED),
                                          (503, FAILED)])
def test_the_last_targets_failure_is_the_calls_result(code, result):
    call, _ = door_call(A)
    summary = finished(call.on_event(ev(ENDED, A, detail=f"{code} Something", code=code), 0.5))
    assert summary["result"] == result and summary["code"] == code


def test_a_target_that_rings_out_is_cancelled_and_the_next_one_called():
    call, _ = door_call(A, B, ring_timeout_s=30)
    call.on_event(ev(RINGING, A), 0.2)
    assert call.tick(29.9) == []
    assert call.tick(30.0) == [Hangup(A, "id-" + A, "ring timeout")]
    assert call.tick(30.1) == []  # asked once
    assert call.on_event(ev(ENDED, A, detail="Connection reset by user"), 30.1) == [Dial(B)]
    summary = finished(call.on_event(ev(ENDED, B, detail="486 Busy Here", code=486), 31.0))
    assert summary["result"] == NO_ANSWER  # one rang out: nobody answered


def test_an_answer_crossing_the_cancel_is_not_taken():
    call, _ = door_call(A, ring_timeout_s=5)
    call.on_event(ev(RINGING, A), 0.1)
    call.tick(5.0)
    assert call.on_event(ev(ANSWERED, A), 5.01) == []  # its SIP stack ACKs and hangs up
    assert call.state != IN_CALL
    assert finished(call.on_event(ev(ENDED, A), 5.1))["result"] == NO_ANSWER


def test_a_ring_group_rings_all_and_cancels_the_others_when_one_answers():
    call, actions = door_call(A, B, ring_group=True)
    assert actions == [Dial(A), Dial(B)]
    call.on_event(ev(RINGING, A), 0.1)
    call.on_event(ev(RINGING, B), 0.1)
    assert call.on_event(ev(ANSWERED, B), 2.0) == [Hangup(A, "id-" + A, "answered elsewhere")]
    assert call.on_event(ev(ENDED, A), 2.1) == []
    summary = finished(call.on_event(ev(ENDED, B), 5.0))
    assert summary["target"] == B and summary["ring_group"] is True


def test_the_talk_time_is_bounded():
    call, _ = door_call(A, max_talk_s=60)
    answer(call, A, 1.0)
    assert call.tick(60.9) == []
    assert call.tick(61.0) == [Hangup(A, "id-" + A, "max_talk")]
    assert finished(call.on_event(ev(ENDED, A), 61.1))["ended_by"] == "max_talk"


def test_the_code_opens_once_and_the_call_ends_after_hangup_after_open():
    call, _ = door_call(A, open_code="#9", hangup_after_open_s=5)
    answer(call)
    assert call.on_event(ev(DTMF, A, detail="#"), 2.0) == []
    assert call.on_event(ev(DTMF, A, detail="9"), 2.5) == [OpenDoor()]
    assert call.on_event(ev(DTMF, A, detail="#"), 3.0) == []  # opened already: keys mean nothing now
    assert call.on_event(ev(DTMF, A, detail="9"), 3.1) == []
    assert call.tick(7.4) == []
    assert call.tick(7.5) == [Hangup(A, "id-" + A, "door_opened")]
    summary = finished(call.on_event(ev(ENDED, A), 7.6))
    assert summary["door_opened"] is True and summary["wrong_codes"] == 0


def test_keys_too_far_apart_are_a_wrong_code_and_enough_wrong_codes_end_the_call():
    call, _ = door_call(A, open_code="#9", digit_timeout_s=3, max_wrong_codes=2)
    answer(call)
    call.on_event(ev(DTMF, A, detail="#"), 2.0)
    assert call.tick(4.9) == []
    assert call.tick(5.0) == []  # the half code timed out: one wrong code
    assert call.wrong_codes == 1
    assert call.on_event(ev(DTMF, A, detail="7"), 6.0) == [Hangup(A, "id-" + A, "wrong_codes")]
    assert call.wrong_codes == 2


def test_without_an_open_code_keys_open_nothing():
    call, _ = door_call(A, open_code="")
    answer(call)
    assert call.on_event(ev(DTMF, A, detail="9"), 2.0) == []
    assert call.wrong_codes == 0


def test_keys_from_a_leg_that_did_not_answer_are_ignored():
    call, _ = door_call(A, B, ring_group=True, open_code="9")
    answer(call, A)
    assert call.on_event(ev(DTMF, B, detail="9"), 2.0) == []


def test_a_stack_that_goes_away_ends_the_call_as_failed():
    call, _ = door_call(A)
    summary = finished(call.abandon(1.0, "baresip ended mid-call"))
    assert summary["result"] == FAILED and call.state == IDLE


def test_a_leg_whose_end_is_never_reported_counts_as_ended_after_the_grace():
    call, _ = door_call(A, B, ring_timeout_s=1)
    call.tick(1.0)
    assert call.tick(10.9) == []
    assert call.tick(11.0) == [Dial(B)]


@pytest.mark.parametrize("code, keys, wrong", [("1234", "121234", 1), ("#9", "##9", 1), ("1234", "9991234", 3)])
def test_a_code_typed_after_a_wrong_start_still_opens_and_counts_one_wrong_code_per_attempt(code, keys, wrong):
    call, _ = door_call(A, open_code=code, max_wrong_codes=5)
    answer(call)
    actions = [a for n, key in enumerate(keys) for a in call.on_event(ev(DTMF, A, detail=key), 2.0 + n * 0.1)]
    assert actions == [OpenDoor()]
    assert call.wrong_codes == wrong  # each key that broke an attempt, not each key after it


def test_the_hang_up_button_while_the_first_target_rings_calls_nobody_else():
    call, _ = door_call(A, B)
    call.on_event(ev(RINGING, A), 0.5)
    assert call.hang_up_all(1.0, "hang_up") == [Hangup(A, "id-" + A, "hang_up")]
    summary = finished(call.on_event(ev(ENDED, A, detail="Request Terminated", code=487), 1.1))
    assert summary["result"] == NO_ANSWER and [t["uri"] for t in summary["targets"]] == [A]


def test_another_calls_end_is_not_taken_for_a_leg_that_has_no_id_yet():
    # A has sent no 180 yet (only 100 Trying), so its id is unknown; a stranger's call that
    # the door rejected ends meanwhile: that must not end A and dial B.
    call, _ = door_call(A, B)
    stranger = CallEvent(ENDED, "sip:stranger@pbx", "id-stranger", "486 Busy Here", 486)
    assert call.on_event(stranger, 0.5) == []
    assert call.legs[0].state == "calling" and len(call.legs) == 1


def test_a_leg_known_by_the_id_the_stack_gave_when_dialling_is_hung_up_by_that_id():
    call, _ = door_call(A, ring_timeout_s=5)
    call.on_dialed(A, "id-from-dial")
    assert call.tick(5.0) == [Hangup(A, "id-from-dial", "ring timeout")]
