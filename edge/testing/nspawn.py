"""The repository's real systemd unit, booted under systemd-nspawn, for tests that need
systemd's own behaviour (its watchdog, Restart=, start limits) around `edge run`.

The container is the host's own /usr on a volatile root (`--volatile=yes`), so nothing is
downloaded; the Python installation and this checkout are bind-mounted read-only, and the
container shares the host's network, so a test reaches the device's health port and a
broker on 127.0.0.1. Only a test's drop-in relaxes the unit: it runs as root (no `edge` user
exists on an empty /etc), may read the bind-mounted Python under /root, and sees the host's
/tmp, where a CI checkout (and so the venv's `edge`) may live. The unit's hardening is
checked on its own by `systemd-analyze security` (tests/image/test_systemd_unit.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from edge.testing.requirements import missing, require_program

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
EDGE = VENV / "bin" / "edge"

# What every drop-in needs to run this checkout's `edge` as root in the volatile root.
RELAX = """[Service]
User=root
Group=root
SupplementaryGroups=
ProtectHome=no
PrivateTmp=no
"""


@dataclass
class BootedUnit:
    proc: subprocess.Popen
    state: Path  # the container's /var/lib/edge
    log: Path

    def console(self) -> str:
        """The container's console so far, for a failure message."""
        return f"; console:\n{self.log.read_text(errors='replace')[-3000:]}"

    def systemctl(self, *args: str) -> str:
        """`systemctl ARGS` inside the container (through its PID 1's namespaces)."""
        leader = _container_init(self.proc.pid)
        if leader is None:
            raise AssertionError("the container's systemd is not running" + self.console())
        result = subprocess.run(["nsenter", "-t", str(leader), "-m", "-u", "-i", "-p", "systemctl", *args],
                                capture_output=True, text=True, timeout=30)
        return result.stdout.strip()


def _container_init(nspawn_pid: int) -> int | None:
    """The container's PID 1 as the host sees it: the `systemd` below nspawn."""
    pending = [nspawn_pid]
    while pending:
        pid = pending.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return child
            except OSError:
                continue
            pending.append(child)
    return None


@contextlib.contextmanager
def booted_unit(tmp_path: Path, drop_in: str, *, edge: Path | None = EDGE, units: Mapping[str, str] = {},
                binds: Sequence[str] = ()) -> Iterator[BootedUnit]:
    """Boot a container whose edge.service is image/edge.service plus `drop_in` (which
    starts with RELAX); powered off on the way out.

    edge: what ExecStart runs instead of /opt/edge/current/bin/edge (None: that path, for a
    test that binds a release prefix there). units: more unit files (name → text), enabled
    like edge.service. binds: more nspawn --bind/--bind-ro options."""
    nspawn = require_program("systemd-nspawn", "systemd-container")
    require_program("nsenter", "util-linux")
    if os.geteuid() != 0:
        missing("systemd-nspawn needs root: run the tests as root (CI does)")
    unit_dir = tmp_path / "units"
    (unit_dir / "edge.service.d").mkdir(parents=True)
    (unit_dir / "multi-user.target.wants").mkdir()
    unit = (REPO / "image" / "edge.service").read_text()
    if edge is not None:
        unit = unit.replace("/opt/edge/current/bin/edge", str(edge))
    (unit_dir / "edge.service.d" / "test.conf").write_text(drop_in)
    for name, text in {"edge.service": unit, **units}.items():
        (unit_dir / name).write_text(text)
        (unit_dir / "multi-user.target.wants" / name).symlink_to(f"../{name}")
    state = tmp_path / "state"
    state.mkdir()
    python = {Path(sys.base_prefix).resolve(), VENV.resolve(), REPO}
    cmd = [nspawn, "-q", "-D", "/", "--volatile=yes", "--keep-unit", "--register=no", "--console=pipe",
           f"--bind-ro={unit_dir}:/etc/systemd/system", f"--bind={state}:/var/lib/edge", *binds,
           *[f"--bind-ro={p}" for p in sorted(python)], "--boot", "systemd.firstboot=off"]
    log_path = tmp_path / "console.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield BootedUnit(proc, state, log_path)
        finally:
            power_off(proc)


def power_off(proc: subprocess.Popen, timeout: float = 60) -> None:
    """End a systemd-nspawn container: SIGTERM makes nspawn ask the container's systemd to
    power off; killed if that takes longer than `timeout`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
