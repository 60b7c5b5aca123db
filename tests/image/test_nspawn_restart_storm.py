"""Issue 9 item 1 under the real unit: restart commands from anyone on the broker cannot
walk systemd into its start limit or the device into safe mode. 30 restart commands of both
kinds in about a minute, with a press after each, to `edge run` started by systemd (the
unit's Restart=, start limits and watchdog in force) in a systemd-nspawn container."""

from __future__ import annotations

import pytest
import restart_storm

from edge.testing.nspawn import EDGE, RELAX, booted_unit
from edge.testing.waiting import wait_for

# --sim: the doorbell's GPIO is gpiozero's mock (no pins here); everything else is as
# installed. The health port is chosen free by the runtime and written to its endpoint file.
DROP_IN = RELAX + """ExecStart=
ExecStart={edge} run --sim
Environment=EDGE_HEALTH_PORT=0 {device_env}
"""


@pytest.mark.timeout(240)
def test_a_storm_of_restart_commands_leaves_the_unit_active_and_every_press_rings(tmp_path, mosquitto):
    device_env = " ".join(f"{k}={v}" for k, v in {**restart_storm.DEVICE_ENV, "EDGE_MQTT_PORT": mosquitto.port}.items())
    with restart_storm.watching(mosquitto.port) as watcher, \
            booted_unit(tmp_path, DROP_IN.format(edge=EDGE, device_env=device_env)) as unit:
        endpoint_file = unit.state / "endpoint"
        wait_for(lambda: endpoint_file.exists() or unit.proc.poll() is not None, 90,
                 message=lambda: "the device's endpoint" + unit.console())
        assert unit.proc.poll() is None, unit.console()
        endpoint = endpoint_file.read_text().strip()
        restart_storm.storm(watcher, endpoint)
        restart_storm.assert_refused_and_counted(watcher, endpoint)
        shown = unit.systemctl("show", "edge.service", "-p", "ActiveState", "-p", "NRestarts", "-p", "MainPID")
        assert "ActiveState=active" in shown and "NRestarts=0" in shown, shown + unit.console()
        assert (unit.state / "boot-count").read_text().strip() == "1"  # one start, no safe mode in sight
