"""The systemd unit, checked by systemd's own tools (no running systemd needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load
from edge.assembly import all_sections, worker_classes
from edge.runtime import EXIT_NO_CONFIG
from edge.testing.requirements import require_program
from services.system.worker import SystemWorker

IMAGE = Path(__file__).resolve().parents[2] / "image"
EDGE = Path(sys.executable).with_name("edge")
MAX_EXPOSURE = 2.0  # systemd-analyze security: "OK" is below 4.0; issue 14 holds it at 2.0
INSTALLED_EDGE = "/opt/edge/current/bin/edge"  # the release install.sh made current


@pytest.fixture
def unit(tmp_path):
    path = tmp_path / "edge.service"
    # verify wants ExecStart's program to exist: this venv's stands in for the installed one
    # (test_installer.py verifies the unit as installed, inside its root)
    text = (IMAGE / "edge.service").read_text()
    assert INSTALLED_EDGE in text
    path.write_text(text.replace(INSTALLED_EDGE, str(EDGE)))
    return path


def test_unit_verifies_cleanly(unit):
    analyze = require_program("systemd-analyze", "systemd")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == ""


def test_update_path_unit_and_its_service_verify_cleanly(tmp_path):
    """Home Assistant's Install button: the path unit watching the request and the root
    oneshot that carries it out."""
    analyze = require_program("systemd-analyze", "systemd")
    for name in ("edge-update.path", "edge-update.service"):
        text = (IMAGE / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALLED_EDGE, str(EDGE)))
    assert "PathExists=/var/lib/edge/update-request.json" in (tmp_path / "edge-update.path").read_text()
    result = subprocess.run([analyze, "verify", str(tmp_path / "edge-update.path"), str(tmp_path / "edge-update.service")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_unit_security_exposure_is_low(unit):
    analyze = require_program("systemd-analyze", "systemd")
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                            capture_output=True, text=True)
    score = float(re.search(r"Overall exposure level for edge.service: ([\d.]+)", result.stdout).group(1))
    assert score <= MAX_EXPOSURE, result.stdout[-2000:]


def test_unit_is_consistent_with_safe_mode_and_exit_codes():
    text = (IMAGE / "edge.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["Type"] == "notify" and settings["Restart"] == "on-failure"
    assert settings["RestartPreventExitStatus"] == str(EXIT_NO_CONFIG)
    threshold = load(all_sections([SystemWorker]), None, {}, sim=False)["safe_mode"].boot_threshold
    # safe mode must be reached before systemd's start limit gives up
    assert threshold + 1 < int(settings["StartLimitBurst"])
    assert (threshold + 1) * int(settings["RestartSec"]) < int(settings["StartLimitIntervalSec"])
    assert int(settings["WatchdogSec"]) >= 10


def test_example_config_is_valid():
    config = load(all_sections(worker_classes()), IMAGE / "edge.example.toml", {}, sim=False)
    assert config.profile == "pi" and config.warnings == []
