"""An update under real systemd: boot a container (systemd-nspawn, the host's /usr on a
volatile root, as tests/image/test_nspawn_watchdog.py does) with the real unit running
/opt/edge/current/bin/edge, and let a oneshot unit inside run `edge update`, which stops
and starts edge.service through systemctl: a good release is committed, one that crashes
at start is rolled back and the old one serves again.

The test's drop-in relaxes only what an empty /etc needs (root instead of the `edge` user,
the bind-mounted Python under /root readable) and disables the workers that want hardware
or a broker.
"""

from __future__ import annotations

import json
import tarfile
import urllib.request
from pathlib import Path

import pytest

from edge.releases import ReleaseLayout
from edge.testing.releases import build_release
from edge.testing.nspawn import RELAX, booted_unit
from edge.testing.waiting import wait_for

PREFIX = Path("/opt/edge")

DROP_IN = RELAX + """RestartSec=1
TimeoutStartSec=20
Environment=EDGE_DOORBELL_ENABLED=false EDGE_MQTT_ENABLED=false EDGE_SYSTEM_ENABLED=false EDGE_HEALTH_PORT=0
"""

UPDATES = """[Unit]
Description=the test's updates, once edge.service is ready
After=edge.service
Wants=edge.service

[Service]
Type=oneshot
Environment=EDGE_STATE_DIR=/var/lib/edge EDGE_CONFIG=/etc/edge/edge.toml
Environment=EDGE_DOORBELL_ENABLED=false EDGE_MQTT_ENABLED=false EDGE_SYSTEM_ENABLED=false EDGE_HEALTH_PORT=0
ExecStart=/bin/sh -c '\\
  /opt/edge/current/bin/edge update /artifacts/good/edge-1.1.0.tar.gz --settle 1 --json > /results/good.json; \\
  /opt/edge/current/bin/edge update /artifacts/crash/edge-2.0.0.tar.gz --settle 1 --json > /results/crash.json; \\
  /opt/edge/current/bin/edge update --status --json > /results/status.json; touch /results/done'

[Install]
WantedBy=multi-user.target
"""


def unpack(archive: Path, prefix: Path, version: str) -> None:
    """As the installer would (its `edge --version` check cannot run outside the container)."""
    with tarfile.open(archive) as tar:
        tar.extractall(prefix / "releases" / version, filter="tar")


@pytest.mark.timeout(240)
def test_under_systemd_a_good_update_commits_and_one_that_crashes_at_start_rolls_back(tmp_path):
    prefix, results, etc = (tmp_path / n for n in ("opt", "results", "etc"))
    for d in (results, etc):
        d.mkdir()
    artifacts = tmp_path / "artifacts"
    first = build_release(PREFIX, "1.0.0", artifacts / "good")
    build_release(PREFIX, "1.1.0", artifacts / "good")
    build_release(PREFIX, "2.0.0", artifacts / "crash", "crash")
    unpack(first, prefix, "1.0.0")
    layout = ReleaseLayout(prefix)
    layout.switch_current("1.0.0")
    layout.commit("1.0.0")
    (etc / "edge.toml").write_text('[node]\nid = "nspawn-update"\n[update]\ndeadline_s = 20\n')
    binds = (f"--bind-ro={etc}:/etc/edge", f"--bind={prefix}:{PREFIX}", f"--bind-ro={artifacts}:/artifacts",
             f"--bind={results}:/results")
    with booted_unit(tmp_path, DROP_IN, edge=None, units={"edge-test-updates.service": UPDATES},
                     binds=binds) as unit:
        proc, state, console = unit.proc, unit.state, unit.console
        wait_for(lambda: (results / "done").exists() or proc.poll() is not None, timeout=180, interval=0.2,
                 message=lambda: "the updates inside the container" + console())
        assert proc.poll() is None, console()
        good = json.loads((results / "good.json").read_text())
        assert good["ok"] and good["outcome"] == "committed" and good["version"] == "1.1.0", good
        crash = json.loads((results / "crash.json").read_text())
        assert crash["outcome"] == "rolled-back" and crash["previous"] == "1.1.0", crash
        assert "systemctl start edge.service" in crash["reason"], crash  # systemd said the start failed
        status = json.loads((results / "status.json").read_text())
        assert (status["current"], status["committed"]) == ("1.1.0", "1.1.0")
        # the old release serves again (the container shares the host's network)
        with urllib.request.urlopen((state / "endpoint").read_text().strip() + "/health", timeout=10) as resp:
            assert json.loads(resp.read())["version"] == "1.1.0"
