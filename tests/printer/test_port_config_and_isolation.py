"""The serial port by pyserial URL, the [printer] config checks, and what the printer must
never do: stall its link for a slow listener, or touch the doorbell."""

from __future__ import annotations

import socket
import threading

import pytest

from edge.assembly import load_config
from edge.config import ConfigError
from edge.testing.device import TestDevice
from edge.testing.waiting import wait_for
from hardware.printer import PortGone, SerialPort
from hardware.printer.port import MAX_PARTIAL_BYTES
from printer.helpers import gcode_lines, job_commands, printer_config, wait_state, write_gcode
from services.doorbell.worker import DoorbellWorker, RING
from services.printer.worker import PrinterWorker


def test_the_port_opens_loop_and_socket_urls_and_keeps_split_lines_whole():
    loop = SerialPort("loop://", 115200)
    loop.open()
    loop.write(b"ok N1 P15 B3\nT:21.0 /0")
    assert wait_for(lambda: loop.read_lines(), 2) == ["ok N1 P15 B3"]
    loop.write(b".0 B:20.0 /0.0\n")
    assert wait_for(lambda: loop.read_lines(), 2) == ["T:21.0 /0.0 B:20.0 /0.0"]
    loop.close()

    server = socket.create_server(("127.0.0.1", 0))
    port_number = server.getsockname()[1]

    received = []

    def serial_server():  # a serial-over-TCP bridge (ser2net) to a printer
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(64))  # pyserial flushes what arrives before open() returns
            conn.sendall(b"echo:Marlin 2.1.2.1\r\nok\r\n")
            conn.recv(64)  # until the host closes
    thread = threading.Thread(target=serial_server)
    thread.start()
    remote = SerialPort(f"socket://127.0.0.1:{port_number}", 115200)
    remote.open()
    remote.write(b"N0 M110 N0*125\n")
    lines = []
    wait_for(lambda: lines.extend(remote.read_lines()) or len(lines) >= 2, 5, message="the reply over TCP")
    assert lines == ["echo:Marlin 2.1.2.1", "ok"] and received == [b"N0 M110 N0*125\n"]
    remote.close()
    thread.join(5)
    server.close()


def test_bytes_that_never_end_a_line_are_handed_on_as_garbage_not_kept_growing():
    loop = SerialPort("loop://", 115200)
    loop.open()
    got: list[str] = []
    for _ in range(20):  # 20 kB of noise with no newline (a wrong baud rate), read as it comes
        loop.write(bytes(range(11, 254)) * 4 + b"x")
        got += loop.read_lines()
    assert sum(map(len, got)) >= 10000
    assert all(len(line) <= 2 * MAX_PARTIAL_BYTES for line in got)
    loop.write(b"\nok\n")
    assert wait_for(lambda: loop.read_lines(), 2)[-1] == "ok"  # and real lines still come through
    loop.close()


def test_a_missing_port_is_port_gone_with_what_to_check(tmp_path):
    port = SerialPort(str(tmp_path / "usb-Prusa_Research_Original_Prusa_i3_MK3-if00"), 115200)
    with pytest.raises(PortGone, match="check the printer's cable and power.*ls /dev/serial/by-id"):
        port.open()


def test_config_needs_a_port_outside_the_simulator_and_a_valid_window(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text("[printer]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"\[printer\] port: the printer is enabled but no serial port"):
        load_config(config, sim=False, environ={}, classes=[PrinterWorker])
    assert load_config(config, sim=True, environ={}, classes=[PrinterWorker])[0]["printer"].port == ""
    config.write_text("[printer]\nenabled = true\nport = \"/dev/ttyACM0\"\nwindow = \"lots\"\n")
    with pytest.raises(ConfigError, match=r"\[printer\] window: 'lots' is neither"):
        load_config(config, sim=False, environ={}, classes=[PrinterWorker])
    loaded, _ = load_config(config, sim=False, environ={"EDGE_PRINTER_WINDOW": "4", "EDGE_PRINTER_BAUD": "250000"},
                            classes=[PrinterWorker])
    assert loaded["printer"].window == "4" and loaded["printer"].baud == 250000
    assert load_config(None, sim=True, environ={}, classes=[PrinterWorker])[0]["printer"].enabled is False


def test_a_state_listener_that_blocks_does_not_stall_the_printer_link(make_fake, make_device):
    fake = make_fake(move_s=0.002)
    device = make_device(fake.path)
    wait_state(device, "idle")
    release, blocked = threading.Event(), threading.Event()

    def slow_listener(name, value):  # an MQTT publish stuck behind a dead broker
        if name == "printer.job" and value.get("state") == "printing":
            blocked.set()
            release.wait(10)
    remove = device.runtime.states.listen(slow_listener)
    mark = fake.executed_count()
    write_gcode(device.state_dir / "printer-jobs" / "listener.gcode", gcode_lines(3000))
    device.command("printer_print", {"file": "listener.gcode"})
    try:
        wait_for(blocked.is_set, 20, message="a state publish in progress")
        during = len(job_commands(fake.executed_since(mark)))
        wait_for(lambda: len(job_commands(fake.executed_since(mark))) > during + 100, 10,
                 message="lines still going to the printer while publishing hangs")
    finally:
        release.set()
        remove()


def test_an_unplugged_printer_never_touches_the_doorbell(make_fake, tmp_path):
    fake = make_fake()
    config = {**printer_config(fake.path), "camera": {"backend": "none"}, "faces": {"enabled": False},
              "doorbell": {"cooldown_s": 0.0, "bounce_s": 0.0}}
    with TestDevice(tmp_path / "both", [DoorbellWorker, PrinterWorker], config, watch=("doorbell.*", "printer.*")) \
            as device:
        device.wait_ready()
        wait_state_of = lambda: device.worker("printer").state()  # noqa: E731
        wait_for(lambda: wait_state_of() == "idle", 15, message="the printer connected")
        fake.unplug()
        wait_for(lambda: wait_state_of() == "offline", 10, message="the printer offline")
        button = device.pin(device.config["doorbell"].button_pin)
        for _ in range(3):
            button.drive_low()
            button.drive_high()
        wait_for(lambda: len(device.events(RING)) == 3, 10, message="three rings with the printer gone")
        health = device.runtime.health.as_json()["components"]
        assert health["worker.doorbell"]["state"] == "OK"


def test_edge_doctor_names_a_missing_port_and_the_fix(make_fake, tmp_path):
    from services.printer.doctor import checks

    config = tmp_path / "edge.toml"
    config.write_text(f"[printer]\nenabled = true\nport = \"{tmp_path / 'usb-Creality-if00'}\"\n")
    loaded, _ = load_config(config, sim=False, environ={}, classes=[PrinterWorker])
    port, _ = PrinterWorker.doctor(loaded)
    assert port.status == "fail" and "does not exist" in port.detail and "ls /dev/serial/by-id/" in port.fix
    fake = make_fake()
    config.write_text(f"[printer]\nenabled = true\nport = \"{fake.path}\"\n")
    loaded, _ = load_config(config, sim=False, environ={}, classes=[PrinterWorker])
    port, jobs = checks(loaded)
    assert port.status == "ok" and "/dev/pts/" in port.detail
    assert jobs.status == "skip"
