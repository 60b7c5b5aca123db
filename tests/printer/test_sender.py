"""The sender against the simulated Marlin printer: every fault the fake can inject, and the
job's commands reach the firmware in order, each exactly once."""

from __future__ import annotations

import time

import pytest

from printer.helpers import gcode_lines, job_commands
from edge.testing.waiting import wait_for


def test_sync_survives_boot_noise_and_the_reset_a_board_does_when_the_port_opens(make_fake, make_link):
    fake = make_fake(reset_on_open=True, boot_s=0.3)
    link = make_link(fake)
    assert fake.boots >= 2  # power-on, and the reset when the host opened the port
    firmware = link.sender.firmware
    assert firmware.name.startswith("Marlin")
    assert firmware.has("AUTOREPORT_TEMP") and firmware.has("EMERGENCY_PARSER")
    wait_for(lambda: "M155 S2" in fake.executed_since(), 5, message="temperature autoreport turned on")
    wait_for(lambda: "T" in link.sender.temps, 5, message="a temperature report")


def test_without_autoreport_the_temperatures_are_polled_with_m105(make_fake, make_link):
    fake = make_fake(autoreport=False)
    link = make_link(fake)
    assert not link.sender.firmware.has("AUTOREPORT_TEMP")
    wait_for(lambda: fake.executed_since().count("M105") >= 2, 10, message="two M105 polls")
    assert not any(c.startswith("M155") for c in fake.executed_since())  # never asked for what it lacks
    wait_for(lambda: "T" in link.sender.temps, 5, message="the polled temperatures")


def test_ten_thousand_line_job_with_two_percent_random_resends_runs_every_line_once_in_order(make_fake, make_link):
    fake = make_fake(advanced_ok=True)
    fake.resend_probability = 0.02
    link = make_link(fake)
    assert link.sender.window_limits()[0] > 1  # ADVANCED_OK: a window
    commands = gcode_lines(10_000)
    assert link.print(commands, timeout=120) == commands
    counters = link.sender.snapshot()["counters"]
    assert counters["resends"] >= 100 and counters["timeouts"] == 0


def test_resend_request_replays_from_the_requested_line_and_ignores_stale_requests(make_fake, make_link):
    fake = make_fake()
    fake.resend_lines.update({5, 60, 61, 300})
    link = make_link(fake, window=4)
    commands = gcode_lines(400)
    assert link.print(commands) == commands
    counters = link.sender.snapshot()["counters"]
    assert counters["resends"] >= 4 and counters["timeouts"] == 0
    # Lines in flight past the bad one each draw the same request again; those are ignored,
    # so a rewind replays at most the window, however many requests came.
    assert counters["lines_replayed"] <= 4 * counters["resends"], counters


def test_checksum_errors_on_the_wire_are_resent(make_fake, make_link):
    fake = make_fake()
    fake.checksum_error_probability = 0.05
    link = make_link(fake, window=3)
    commands = gcode_lines(600)
    assert link.print(commands) == commands
    assert fake.resends_requested >= 10


def test_firmware_that_sends_no_ok_after_a_resend_is_learnt_and_nothing_stalls(make_fake, make_link):
    fake = make_fake()
    fake.ok_after_resend = False
    fake.resend_probability = 0.05
    link = make_link(fake)
    commands = gcode_lines(500)
    assert link.print(commands) == commands
    assert link.sender._ok_follows_resend is False
    assert link.sender.snapshot()["counters"]["timeouts"] == 0


def test_a_line_arriving_twice_draws_a_request_for_the_next_unsent_line_which_is_not_an_error(make_fake, make_link):
    fake = make_fake()
    fake.duplicate_lines.update({10, 20})
    link = make_link(fake)
    commands = gcode_lines(40)
    assert link.print(commands) == commands
    # The line the request names is normally already on its way and is not sent again (that
    # would draw the same request once more, for ever); it is only when the firmware's flush at
    # the error swallowed it (the one line in flight), once per duplicate at most.
    assert link.sender.snapshot()["counters"]["lines_replayed"] <= 2


def test_echo_busy_extends_the_timeout_during_a_long_command(make_fake, make_link):
    fake = make_fake(keepalive_s=0.3)
    link = make_link(fake, timeout_s=1.0)
    fake.busy(2.5)  # the next command takes 2.5 s: a filament change, a probe
    commands = gcode_lines(30)
    assert link.print(commands) == commands
    assert link.sender.snapshot()["counters"]["timeouts"] == 0


def test_silence_is_answered_with_m105_and_reported_unresponsive_then_responsive(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake, timeout_s=0.4, unresponsive_after=2)
    commands = gcode_lines(200)
    mark = fake.executed_count()
    from printer.helpers import ListFeed
    link.sender.set_feed(ListFeed(commands))
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 20, 10, message="the job under way")
    fake.silence(1.5)
    link.wait_event("unresponsive", 10)
    link.wait_event("responsive", 10)
    link.wait_event("job_drained", 30)
    assert job_commands(fake.executed_since(mark)) == commands
    assert link.sender.snapshot()["counters"]["timeouts"] >= 2


def test_receive_buffer_overrun_drops_bytes_and_resends_recover_them(make_fake, make_link):
    fake = make_fake(rx_buffer=48, move_s=0.003)  # the host believes Marlin's 128 bytes
    link = make_link(fake, window=4, timeout_s=1.0)
    commands = gcode_lines(300)
    assert link.print(commands) == commands
    assert fake.dropped_bytes > 0 and fake.resends_requested > 0
    assert link.sender.window_limits()[1] < 128  # it learnt to send less at once


def test_the_window_never_sends_more_unacknowledged_bytes_than_the_receive_buffer(make_fake, make_link):
    fake = make_fake(rx_buffer=128, move_s=0.003)
    link = make_link(fake, window=16, rx_buffer=128)
    commands = gcode_lines(300)
    assert link.print(commands) == commands
    assert fake.dropped_bytes == 0 and fake.resends_requested == 0


def test_a_link_that_asks_for_the_same_line_over_ten_times_fails_the_job(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake)
    fake.resend_probability = 1.0
    from printer.helpers import ListFeed
    link.sender.set_feed(ListFeed(gcode_lines(20)))
    event = link.wait_event("link_failed", 20)
    assert "11 times in a row" in event.data["reason"]
    assert "job_drained" not in link.kinds()


def test_thermal_runaway_halts_the_link_with_the_firmware_message(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake)
    from printer.helpers import ListFeed
    fake_lines = gcode_lines(2000)
    link.sender.set_feed(ListFeed(fake_lines))
    wait_for(lambda: link.sender.job_lines_acked > 10, 10, message="the job under way")
    fake.thermal_runaway()
    event = link.wait_event("fatal", 10)
    assert "Thermal Runaway" in event.data["message"]
    assert link.sender.state == "halted"
    with pytest.raises(AssertionError):
        link.wait_event("job_drained", 0.5)


def test_firmware_reset_mid_print_is_reported_and_the_link_syncs_again(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake)
    from printer.helpers import ListFeed
    link.sender.set_feed(ListFeed(gcode_lines(2000)))
    wait_for(lambda: link.sender.job_lines_acked > 10, 10, message="the job under way")
    fake.reset()
    link.wait_event("reset", 10)

    def synced_twice():
        link.wait_event_none()
        return sum(1 for e in link.seen if e.kind == "synced") == 2
    wait_for(synced_twice, 10, message="synced again after the reset")
    assert link.sender.state == "ready" and link.sender.firmware.name.startswith("Marlin")


def test_emergency_stop_reaches_the_firmware_before_the_next_job_line(make_fake, make_link):
    fake = make_fake(baud=250000, move_s=0.01)
    link = make_link(fake)
    from printer.helpers import ListFeed
    link.sender.set_feed(ListFeed(gcode_lines(500)))
    wait_for(lambda: link.sender.job_lines_acked > 5, 10, message="the job under way")
    before = fake.executed_count()
    sent_at = time.monotonic()
    link.sender.emergency_stop()
    wait_for(lambda: fake.last_m112_at is not None, 2, message="M112 at the firmware")
    executed = fake.executed_since(before)
    # The emergency parser acts on M112 as it arrives: at most the one line in flight ran first.
    assert executed.index("M112") <= 1, executed
    assert fake.last_m112_at - sent_at < 1.0
    link.wait_event("fatal", 5)


def test_unplugged_port_ends_the_sender_with_gone(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake)
    fake.unplug()
    event = link.wait_event("gone", 5)
    assert "vanished" in event.data["reason"] or "closed" in event.data["reason"]
    assert not fake.plugged


def test_commands_too_long_for_the_firmware_are_refused_before_sending(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake)
    with pytest.raises(ValueError, match="more than the firmware"):
        link.sender.submit("M117 " + "x" * 100)
    ticket = link.sender.submit("M114")
    assert ticket.wait(5) and ticket.error is None
    assert any(line.startswith("X:") for line in ticket.replies)
    assert link.sender.position["X"] == 0.0


def test_a_reply_the_link_chokes_on_ends_it_as_gone_instead_of_freezing_the_job(make_fake, make_link, monkeypatch):
    from services.printer import sender as sender_module
    parse = sender_module.marlin.parse_reply

    def choke(raw):
        if "choke" in raw:
            raise IndexError("list index out of range")
        return parse(raw)
    monkeypatch.setattr(sender_module.marlin, "parse_reply", choke)
    fake = make_fake()
    link = make_link(fake)
    fake.say("choke on this")
    event = link.wait_event("gone", 5)
    assert "IndexError" in event.data["reason"] and "opening it again" in event.data["reason"]


def test_a_command_in_flight_when_the_firmware_halts_hears_the_halt_at_once(make_fake, make_link):
    fake = make_fake()
    link = make_link(fake)
    dwell = link.sender.submit("G4 S30")  # in flight, answered only when the dwell ends
    wait_for(lambda: "G4 S30" in fake.executed, 10, message="the dwell under way")
    fake.thermal_runaway()
    assert dwell.wait(5), "the ticket was left to wait out its own timeout"
    assert "the firmware halted" in dwell.error and "Thermal Runaway" in dwell.error


def test_a_lost_ok_for_the_jobs_last_line_still_ends_the_job(make_fake, make_link):
    from printer.helpers import ListFeed
    fake = make_fake(autoreport=False)
    link = make_link(fake, timeout_s=1.0)
    lines = gcode_lines(50)
    fake.lose_ok_after.add(lines[-1])
    link.sender.set_feed(ListFeed(lines))
    link.wait_event("job_drained", 15)
    assert fake.executed_since(0).count(lines[-1]) == 1 and link.sender.timeouts >= 1
    assert link.sender.job_lines_acked == 50


def test_an_m110_inside_a_job_renumbers_the_link_instead_of_replaying_the_job(make_fake, make_link):
    from printer.helpers import ListFeed
    fake = make_fake()
    link = make_link(fake)
    lines = gcode_lines(5) + ["M110 N0"] + gcode_lines(5, 100)
    mark = fake.executed_count()
    link.sender.set_feed(ListFeed(lines))
    link.wait_event("job_drained", 10)
    moves = [c for c in lines if c.startswith("G1")]
    assert job_commands(fake.executed_since(mark), ("M110",)) == moves  # each once, in order
    assert link.sender.resends == 0


def test_a_lost_ok_is_noticed_although_temperature_autoreports_keep_arriving(make_fake, make_link):
    """Autoreports (M155, every 2 s) are no sign that the firmware works through the lines
    sent: counted as one, they hid a lost ok for good and the job stalled."""
    from printer.helpers import ListFeed
    fake = make_fake(autoreport=True)
    link = make_link(fake, timeout_s=3.0)
    lines = gcode_lines(100)
    fake.lose_ok_after.add(lines[30])
    link.sender.set_feed(ListFeed(lines))
    link.wait_event("job_drained", 30)
    assert link.sender.timeouts >= 1 and link.sender.job_lines_acked == 100
    assert job_commands(fake.executed_since(0)) == lines


def test_an_emergency_stop_after_half_a_line_on_the_wire_still_halts_the_firmware(make_fake, make_link):
    """The flush before M112 can leave half a line on the wire; Marlin's emergency parser
    then ignores everything up to the next newline, M112 included."""
    fake = make_fake()
    link = make_link(fake)
    mark = fake.received_bytes
    link.sender.port.write(b"N99 G1 X1")  # half a line, as a flushed output can leave it
    wait_for(lambda: fake.received_bytes >= mark + 9, 5, message="the half line at the board")
    link.sender.emergency_stop()
    wait_for(lambda: fake.last_m112_at is not None, 5, message="M112 at the firmware")
    link.wait_event("fatal", 5)


def test_after_a_link_failure_the_link_syncs_again_and_later_commands_run(make_fake, make_link):
    """The line numbers no longer agree after a link failure: without a new sync the command
    reported as failed still ran later, replayed ahead of the next one."""
    fake = make_fake(autoreport=False)
    link = make_link(fake)
    fake.checksum_error_probability = 1.0  # a cable that garbles every line
    failed = link.sender.submit("G1 X5")
    link.wait_event("link_failed", 20)
    assert failed.wait(1) and "times in a row" in failed.error
    fake.clear_faults()  # the cable is fine again
    mark = fake.executed_count()
    later = link.sender.submit("G1 X7")
    assert later.wait(10) and later.error is None
    assert job_commands(fake.executed_since(mark), ("M110",)) == ["G1 X7"]
