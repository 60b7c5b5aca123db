"""What a person and Home Assistant see of the printer: the `edge printer ...` and
`edge sim printer ...` commands against a running device, the simulated printer that
`edge run --sim` starts, and the printer's discovery configs."""

from __future__ import annotations

import pytest

from edge import cli
from edge.mqtt.discovery import Discovery, NodeInfo, owned
from edge.mqtt.topics import Topics
from edge.testing.waiting import wait_for
from mqtt.test_discovery import check_config
from printer.helpers import gcode_lines, job_commands, wait_state, write_gcode
from services.printer.worker import STATES, PrinterWorker

NODE = "testnode"


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """`edge ...` in this process, acting on the device whose state directory is given."""
    config = tmp_path / "edge.toml"

    def use(state_dir, node: str = "nobody"):
        config.write_text(f'[node]\nid = "{node}"\n')  # the CLI checks it reaches this device
        monkeypatch.setenv("EDGE_STATE_DIR", str(state_dir))
        monkeypatch.setenv("EDGE_CONFIG", str(config))
    return use


def test_edge_printer_print_wait_status_send_and_jobs(make_fake, make_device, cli_env, tmp_path, capsys):
    fake = make_fake()
    device = make_device(fake.path)
    wait_state(device, "idle")
    cli_env(device.state_dir)
    commands = gcode_lines(300)
    source = write_gcode(tmp_path / "elsewhere" / "bracket.gcode", commands)
    mark = fake.executed_count()
    assert cli.main(["printer", "print", str(source), "--wait"]) == 0
    out, err = capsys.readouterr()
    assert "printing bracket.gcode (300 commands)" in out and "finished" in out
    assert "[##############################] 100.0%" in err  # the bar ends full
    assert (device.state_dir / "printer-jobs" / "bracket.gcode").read_text() == source.read_text()
    assert job_commands(fake.executed_since(mark)) == commands

    assert cli.main(["printer", "status"]) == 0
    out = capsys.readouterr().out
    assert "state:       idle" in out and "Marlin 2.1.2.1 (simulated)" in out and "nozzle 21.0/0 °C" in out

    assert cli.main(["printer", "send", "M114"]) == 0
    assert "X:" in capsys.readouterr().out

    assert cli.main(["printer", "jobs"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "bracket.gcode" in out

    with pytest.raises(SystemExit, match="nothing is printing"):
        cli.main(["printer", "pause"])


def test_edge_printer_says_what_to_do_when_no_printer_worker_runs(cli_env, tmp_path):
    cli_env(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="no printer worker answers .* with \\[printer\\] enabled = true"):
        cli.main(["printer", "status"])


def test_edge_run_sim_starts_the_simulated_printer_and_edge_sim_printer_drives_it(make_device, cli_env, capsys):
    device = make_device("")  # enabled, no port, in the simulator
    worker = device.worker("printer")
    assert worker.simulated is not None and worker.port.url == worker.simulated.path
    wait_state(device, "idle")
    cli_env(device.state_dir, device.config["node"].id)
    assert cli.main(["sim", "printer", "unplug"]) == 0
    assert '"plugged": false' in capsys.readouterr().out
    wait_state(device, "offline")
    assert cli.main(["sim", "printer", "replug"]) == 0
    wait_state(device, "idle")
    assert cli.main(["sim", "printer", "baud", "250000"]) == 0
    assert worker.simulated.baud == 250000
    assert cli.main(["sim", "printer", "busy"]) == 1
    assert "busy needs SECONDS" in capsys.readouterr().err
    # A restart of the worker keeps the same simulated printer, as a real one would stay.
    fake = worker.simulated
    assert device.runtime.supervisor.restart("printer")
    wait_for(lambda: device.worker("printer") is not worker and device.worker("printer").simulated is fake, 15,
             message="the worker restarted with the same simulated printer")


def test_the_printer_is_a_child_device_with_documented_discovery_configs():
    configs = Discovery(NodeInfo(NODE, "Test node", "1.0"), Topics(NODE)).build(
        owned(PrinterWorker.entities, "printer"))
    assert len(configs) == len(PrinterWorker.entities)
    for topic, cfg in configs.items():
        check_config(topic, cfg, node=NODE)
        assert cfg["device"]["name"] == "Test node 3D printer"
    state = configs[f"homeassistant/sensor/{NODE}/printer_state/config"]
    assert state["options"] == list(STATES) == ["offline", "connecting", "idle", "printing", "paused",
                                                  "interrupted", "error"]
    buttons = {t.split("/")[3] for t in configs if "/button/" in t}
    assert buttons == {"printer_pause", "printer_resume", "printer_cancel", "printer_emergency_stop"}
    events = {t.split("/")[3]: c for t, c in configs.items() if "/event/" in t}
    assert set(events) == {"printer_job_finished", "printer_job_failed"}
    temps = [c for t, c in configs.items() if c.get("device_class") == "temperature"]
    assert len(temps) == 4 and all(c["unit_of_measurement"] == "°C" for c in temps)
