"""Stopping and starting the device's service, for the updater and for restore.

On a device this is `systemctl stop|start edge.service`. `EDGE_SERVICE_CONTROL` replaces the
command (a template with `{action}`), so the same code drives a service manager of a test,
a container's init, or a unit with another name.

Not responsible for: waiting until the service is ready (edge.update polls its health).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Mapping

DEFAULT_COMMAND = "systemctl {action} edge.service"
TIMEOUT_S = 120.0  # systemd's own stop timeout (TimeoutStopSec=20) fits well inside


class ServiceControlError(Exception):
    pass


class ServiceControl:
    def __init__(self, template: str = DEFAULT_COMMAND):
        self.template = template

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ServiceControl":
        return cls(environ.get("EDGE_SERVICE_CONTROL") or DEFAULT_COMMAND)

    def command(self, action: str) -> list[str]:
        return shlex.split(self.template.format(action=action))

    def run(self, action: str) -> None:
        cmd = self.command(action)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceControlError(f"`{shlex.join(cmd)}` failed ({exc}); set EDGE_SERVICE_CONTROL to the "
                                      f"command that {action}s the device's service") from None
        if done.returncode != 0:
            raise ServiceControlError(f"`{shlex.join(cmd)}` exited with {done.returncode}: "
                                      f"{(done.stderr or done.stdout).strip()[-500:]}")

    def stop(self) -> None:
        self.run("stop")

    def start(self) -> None:
        self.run("start")
