"""Boot a container under systemd-nspawn with the real unit, and check that a hung
critical worker makes systemd's watchdog restart the service, with the stuck thread's
stack in the service's error output (faulthandler on SIGABRT).

The container is the host's own /usr on a volatile root (`--volatile=yes`), so nothing is
downloaded; the Python installation and this checkout are bind-mounted read-only. Only the
test's drop-in relaxes the unit: it runs as root (no `edge` user exists on an empty /etc)
and may read the bind-mounted Python under /root, and sees the host's /tmp, where a CI
checkout (and so the venv's `edge`) may live. The unit's hardening is checked on its
own by `systemd-analyze security` in test_systemd_unit.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.testing.requirements import missing, require_program
from edge.testing.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
EDGE = VENV / "bin" / "edge"

DROP_IN = """[Service]
ExecStart=
ExecStart={edge} run
User=root
Group=root
SupplementaryGroups=
ProtectHome=no
PrivateTmp=no
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
    nspawn = require_program("systemd-nspawn", "systemd-container")
    if os.geteuid() != 0:
        missing("systemd-nspawn needs root: run the tests as root (CI does)")
    units = tmp_path / "units"
    (units / "edge.service.d").mkdir(parents=True)
    (units / "multi-user.target.wants").mkdir()
    (units / "edge.service").write_text((REPO / "image" / "edge.service").read_text().replace("/opt/edge/current/bin/edge", str(EDGE)))
    (units / "edge.service.d" / "test.conf").write_text(DROP_IN.format(edge=EDGE))
    (units / "multi-user.target.wants" / "edge.service").symlink_to("../edge.service")
    state = tmp_path / "state"
    state.mkdir()
    binds = {Path(sys.base_prefix).resolve(), VENV.resolve(), REPO}
    cmd = [nspawn, "-q", "-D", "/", "--volatile=yes", "--keep-unit", "--register=no", "--console=pipe",
           f"--bind-ro={units}:/etc/systemd/system", f"--bind={state}:/var/lib/edge",
           *[f"--bind-ro={p}" for p in sorted(binds)], "--boot", "systemd.firstboot=off"]
    log = open(tmp_path / "console.log", "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def console() -> str:
            return f"; console:\n{(tmp_path / 'console.log').read_text()[-3000:]}"
        wait_for(lambda: starts(state) >= 1 or proc.poll() is not None, timeout=60,
                 message=lambda: "first start" + console())
        assert proc.poll() is None, console()
        # hang after 2 s, watchdog of 3 s, RestartSec=1: the second start comes within ~10 s
        wait_for(lambda: starts(state) >= 2, timeout=60, message=lambda: "restart by the watchdog" + console())
        stderr = (state / "stderr.log").read_text()
        assert "Fatal Python error: Aborted" in stderr
        assert "in run" in stderr and "workers.py" in stderr  # the stuck worker's own frame
    finally:
        proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
