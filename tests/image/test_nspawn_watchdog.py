"""Boot the real unit under systemd-nspawn (edge/testing/nspawn.py) and check that a hung
critical worker makes systemd's watchdog restart the service, with the stuck thread's stack
in the service's error output (faulthandler on SIGABRT).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.testing.nspawn import EDGE, RELAX, booted_unit
from edge.testing.waiting import wait_for

DROP_IN = RELAX + """ExecStart=
ExecStart={edge} run
WatchdogSec=3
RestartSec=1
StandardError=append:/var/lib/edge/stderr.log
Environment=EDGE_RUNTIME_PLUGINS=edge.testing.workers:HangsAfter EDGE_HANG_AFTER_AFTER_S=2
Environment=EDGE_DOORBELL_ENABLED=false EDGE_MQTT_ENABLED=false EDGE_SYSTEM_ENABLED=false
"""


def starts(state: Path) -> int:
    """Each start of the runtime increments its boot counter."""
    try:
        return int((state / "boot-count").read_text())
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.timeout(180)
def test_hung_critical_worker_makes_systemd_restart_the_service(tmp_path):
    with booted_unit(tmp_path, DROP_IN.format(edge=EDGE)) as unit:
        wait_for(lambda: starts(unit.state) >= 1 or unit.proc.poll() is not None, timeout=60,
                 message=lambda: "first start" + unit.console())
        assert unit.proc.poll() is None, unit.console()
        # hang after 2 s, watchdog of 3 s, RestartSec=1: the second start comes within ~10 s
        wait_for(lambda: starts(unit.state) >= 2, timeout=60,
                 message=lambda: "restart by the watchdog" + unit.console())
        stderr = (unit.state / "stderr.log").read_text()
        assert "Fatal Python error: Aborted" in stderr
        assert "in run" in stderr and "workers.py" in stderr  # the stuck worker's own frame
