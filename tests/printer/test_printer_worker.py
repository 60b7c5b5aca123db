"""The printer worker in a real runtime against the simulated Marlin printer: jobs, pause,
resume, cancel, interruptions (unplug, firmware reset, runtime restart) and explicit resume,
heaters made safe, fatal firmware errors, commands refused with reasons."""

from __future__ import annotations

import threading

import pytest

from edge.commands import CommandRejected
from edge.health import DEGRADED
from edge.testing.waiting import wait_for
from printer.helpers import gcode_lines, job_commands, printer_state, wait_state, write_gcode

SCRIPTS = ("G91", "G90", "M400", "G1 Z5 F600", "G1 Z-5 F600", "M104 S0", "M140 S0", "M107", "M84")


def jobs_dir(device):
    return device.state_dir / "printer-jobs"


def start_job(device, name: str, commands: list[str]) -> dict:
    write_gcode(jobs_dir(device) / name, commands)
    return device.command("printer_print", {"file": name})


def test_a_job_prints_every_command_once_in_order_and_reports_progress_and_the_finished_event(make_fake, make_device):
    fake = make_fake()
    device = make_device(fake.path)
    wait_state(device, "idle")
    commands = gcode_lines(800)
    mark = fake.executed_count()
    job = start_job(device, "part.gcode", commands)
    assert job["total_lines"] == 800 and job["state"] == "printing"
    event = device.wait_event("printer.job_finished", timeout=60)
    assert event.data["event_type"] == "finished" and event.data["line"] > 800  # file lines, comments included
    assert job_commands(fake.executed_since(mark)) == commands
    status = device.command("printer_status")
    assert status["state"] == "idle" and status["job"]["progress"] == 100.0
    worker = device.worker("printer")
    worker.publish_states()
    assert device.runtime.states.get("printer.job")["file"] == "part.gcode"
    assert device.runtime.states.get("printer.temps")["nozzle"] == pytest.approx(21.0, abs=1)


def test_pause_runs_the_pause_script_and_resume_continues_without_losing_a_line(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path)
    wait_state(device, "idle")
    commands = gcode_lines(600)
    mark = fake.executed_count()
    start_job(device, "pause.gcode", commands)
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 50, 20, message="the job under way")
    paused = device.command("printer_pause")
    assert paused["state"] == "paused"
    wait_for(lambda: "G1 Z5 F600" in fake.executed_since(mark), 10, message="the pause script (park)")
    held = len(fake.executed_since(mark))
    assert printer_state(device) == "paused"
    device.command("printer_resume")
    device.wait_event("printer.job_finished", timeout=60)
    executed = fake.executed_since(mark)
    assert executed.index("G1 Z5 F600") < executed.index("G1 Z-5 F600")  # parked, then back
    assert job_commands(executed, also_skip=SCRIPTS) == commands
    assert held < len(executed)


def test_cancel_stops_feeding_and_runs_the_safe_end_script(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path)
    wait_state(device, "idle")
    mark = fake.executed_count()
    start_job(device, "cancel.gcode", gcode_lines(3000))
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 20, 20, message="the job under way")
    device.command("printer_cancel")
    event = device.wait_event("printer.job_finished", timeout=10)
    assert event.data["event_type"] == "cancelled"
    wait_for(lambda: "M84" in fake.executed_since(mark), 10, message="the cancel script")
    executed = fake.executed_since(mark)
    assert {"M104 S0", "M140 S0", "M84"} <= set(executed[-6:])
    assert len(job_commands(executed, also_skip=SCRIPTS)) < 3000
    wait_state(device, "idle")


def test_unplug_mid_job_interrupts_at_the_right_line_and_resume_continues_from_the_checkpoint(make_fake, make_device):
    fake = make_fake()
    device = make_device(fake.path, window="1")
    wait_state(device, "idle")
    commands = gcode_lines(500)
    path = write_gcode(jobs_dir(device) / "unplug.gcode", commands)
    mark = fake.executed_count()
    fake.unplug_at_line(fake.last_n + 200)  # the 200th line the host numbers from now on
    device.command("printer_print", {"file": "unplug.gcode"})
    event = device.wait_event("printer.job_failed", timeout=30)
    assert event.data["event_type"] == "interrupted"
    wait_state(device, "offline")
    before = job_commands(fake.executed_since(mark))
    # The host's own lines (M105 polls, none with autoreport) are numbered too: count the job's.
    assert 150 < len(before) < 200
    file_lines = path.read_text().splitlines()
    assert file_lines[event.data["line"] - 1].startswith(before[-1])  # interrupted at the last line that ran
    def printer_health():
        health = device.runtime.health.as_json()["components"].get("worker.printer", {})
        return health if health.get("state") == DEGRADED else None
    health = wait_for(printer_health, 10, message="the printer's health to be DEGRADED")
    assert health["state"] == DEGRADED and "disconnected" in health["reason"]
    assert device.runtime.supervisor.runner("printer").restarts == 0  # expected absence, not a crash
    fake.replug()
    wait_state(device, "interrupted", timeout=15)  # reconnected and synced; resume is offered, not done
    assert device.command("printer_status")["job"]["line"] == event.data["line"]
    mark2 = fake.executed_count()
    device.command("printer_resume")
    device.wait_event("printer.job_finished", timeout=60)
    after = job_commands(fake.executed_since(mark2))
    assert before + after == commands


def test_heaters_left_on_by_the_firmware_are_set_safe_after_a_reconnect(make_fake, make_device):
    fake = make_fake()
    device = make_device(fake.path)
    wait_state(device, "idle")
    device.command("printer_send", {"gcode": "M104 S200"})
    device.command("printer_send", {"gcode": "M140 S60"})
    fake.unplug()
    wait_state(device, "offline")
    mark = fake.executed_count()
    fake.replug()  # the board kept its power: its heaters are still on
    wait_for(lambda: {"M104 S0", "M140 S0"} <= set(fake.executed_since(mark)), 15,
             message="heaters set to 0 after the reconnect")
    assert fake.temps["T"][1] == 0 and fake.temps["B"][1] == 0
    assert "heaters were on" in device.worker("printer").last_error


def test_firmware_reset_mid_print_interrupts_the_job(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path)
    wait_state(device, "idle")
    mark = fake.executed_count()
    start_job(device, "reset.gcode", gcode_lines(2000))
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 30, 20, message="the job under way")
    fake.reset()
    event = device.wait_event("printer.job_failed", timeout=15)
    assert event.data["event_type"] == "interrupted" and "restarted" in event.data["reason"]
    wait_state(device, "interrupted")


def test_thermal_runaway_fails_the_job_with_the_firmware_message(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path)
    wait_state(device, "idle")
    mark = fake.executed_count()
    start_job(device, "runaway.gcode", gcode_lines(2000))
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 30, 20, message="the job under way")
    fake.thermal_runaway()
    event = device.wait_event("printer.job_failed", timeout=15)
    assert event.data["event_type"] == "failed" and "Thermal Runaway" in event.data["reason"]
    wait_state(device, "error")
    with pytest.raises(CommandRejected, match="halted"):
        device.command("printer_send", {"gcode": "M105"})
    fake.reset()  # the person fixed it and pressed the printer's reset button
    wait_state(device, "idle")
    assert "Thermal Runaway" in device.command("printer_status")["last_error"]  # kept until the next job


def test_emergency_stop_is_sent_at_once_and_fails_the_job(make_fake, make_device):
    fake = make_fake(move_s=0.005)
    device = make_device(fake.path)
    wait_state(device, "idle")
    mark = fake.executed_count()
    start_job(device, "estop.gcode", gcode_lines(2000))
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 10, 20, message="the job under way")
    result = device.command("printer_emergency_stop", via="mqtt", allow_dangerous=False)
    assert result["emergency_parser"] is True
    wait_for(lambda: fake.halted is not None, 2, message="the firmware halted")
    event = device.wait_event("printer.job_failed", timeout=10)
    assert "emergency stop" in event.data["reason"]


def test_host_actions_from_the_printer_pause_and_resume_the_job(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path)
    wait_state(device, "idle")
    mark = fake.executed_count()
    commands = gcode_lines(500)
    start_job(device, "action.gcode", commands)
    wait_for(lambda: len(job_commands(fake.executed_since(mark))) > 20, 20, message="the job under way")
    fake.host_action("pause")  # e.g. a filament runout sensor on the printer
    wait_state(device, "paused")
    fake.host_action("resume")
    device.wait_event("printer.job_finished", timeout=60)
    assert job_commands(fake.executed_since(mark), also_skip=SCRIPTS) == commands


def test_the_runtime_restarted_mid_job_reports_the_job_interrupted_at_its_line(make_fake, make_device, tmp_path):
    fake = make_fake(move_s=0.003)
    state_dir = tmp_path / "restarted"
    device = make_device(fake.path, state_dir=state_dir)
    wait_state(device, "idle")
    start_job(device, "restart.gcode", gcode_lines(3000))
    wait_for(lambda: device.command("printer_status")["job"]["line"] > 50, 20, message="the job under way")
    device.stop()
    executed_lines = len(job_commands(fake.executed_since()))
    again = make_device(fake.path, state_dir=state_dir)
    wait_state(again, "interrupted", timeout=15)
    status = again.command("printer_status")
    assert status["job"]["state"] == "interrupted" and "runtime stopped" in status["job"]["reason"]
    # The line stored at the stop is the last one the firmware acknowledged (the header and
    # layer comments count as file lines, so it is a little more than the commands run).
    assert executed_lines <= status["job"]["line"] <= executed_lines * 1.1 + 5
    with pytest.raises(CommandRejected, match="resume or cancel it first"):
        again.command("printer_print", {"file": "restart.gcode"})
    # Resumed, its progress goes on from the checkpoint's counts, not from zero.
    before = status["job"]
    again.command("printer_resume")
    finished = again.wait_event("printer.job_finished", timeout=60)
    assert finished.data["lines_done"] == 3000, finished.data
    assert finished.data["print_s"] > before["print_s"] > 0


def test_an_unknown_file_or_a_line_too_long_is_refused_with_the_reason(make_fake, make_device):
    fake = make_fake()
    device = make_device(fake.path)
    wait_state(device, "idle")
    with pytest.raises(CommandRejected, match="no file 'missing.gcode' in the job folder"):
        device.command("printer_print", {"file": "missing.gcode"})
    with pytest.raises(CommandRejected, match="no paths"):
        device.command("printer_print", {"file": "../etc/passwd.gcode"})
    write_gcode(jobs_dir(device) / "long.gcode", ["G28", "M117 " + "x" * 100])
    with pytest.raises(CommandRejected, match="long.gcode line 5: .*more than the firmware"):
        device.command("printer_print", {"file": "long.gcode"})
    with pytest.raises(CommandRejected, match="nothing is printing"):
        device.command("printer_pause")
    with pytest.raises(CommandRejected, match="unknown field"):
        device.command("printer_print", {"file": "x.gcode", "speed": 2})


def test_a_slow_checkpoint_write_does_not_stall_the_sender(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path, checkpoint_interval_s=0.5)
    wait_state(device, "idle")
    worker = device.worker("printer")
    release, blocked = threading.Event(), threading.Event()
    save = worker.jobs.save

    def slow_save(job, wall):
        if job.state == "printing":
            blocked.set()
            release.wait(10)  # a store stuck for seconds (an SD card in trouble)
        save(job, wall)

    worker.jobs.save = slow_save
    mark = fake.executed_count()
    start_job(device, "slow.gcode", gcode_lines(3000))
    try:
        wait_for(blocked.is_set, 20, message="a checkpoint write in progress")
        during = len(fake.executed_since(mark))
        wait_for(lambda: len(fake.executed_since(mark)) > during + 100, 10,
                 message="lines still going to the printer while the checkpoint write hangs")
    finally:
        release.set()


def test_a_port_where_nothing_answers_the_sync_is_reported_with_the_likely_cause(make_device):
    import os
    import pty
    import tty

    master, slave = pty.openpty()  # a port that opens, but a board that never answers (wrong baud)
    tty.setraw(slave)
    try:
        device = make_device(os.ttyname(slave))
        assert printer_state(device) in ("offline", "connecting")

        def reason():
            health = device.runtime.health.as_json()["components"].get("worker.printer", {})
            return health.get("reason") if health.get("state") == DEGRADED else None
        text = wait_for(reason, 15, message="the printer's health to say why it is not connected")
        assert "does not answer `M110`" in text and "baud = 250000" in text
        assert printer_state(device) == "connecting"
        write_gcode(jobs_dir(device) / "any.gcode", gcode_lines(5))
        with pytest.raises(CommandRejected, match="the printer is connecting"):
            device.command("printer_print", {"file": "any.gcode"})
    finally:
        os.close(master)
        os.close(slave)
