"""Builders shared by the runtime tests."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

from edge import config as configmod
from edge.breaker import BreakerBoard
from edge.bus import EventBus
from edge.health import HealthRegistry
from edge.assembly import all_sections
from edge.states import StateBoard
from edge.testing.notify_socket import NotifyListener
from edge.worker import WorkerContext

REPO = Path(__file__).resolve().parents[1]
EDGE = str(Path(sys.executable).with_name("edge"))


def make_config(classes=(), data=None, env=None, sim=True):
    return configmod.build(all_sections(classes), data or {}, env or {}, "sim" if sim else "pi")


def context_factory(health: HealthRegistry, clock, sim=None):
    bus, breakers, states = EventBus(clock), BreakerBoard(clock), StateBoard()

    def make(worker, stopping: threading.Event, heartbeat, shutdown=None):
        return WorkerContext(worker, stopping=stopping, clock=clock, bus=bus, store=None, breakers=breakers,
                             health=health, metrics=None, states=states, config=None, on_heartbeat=heartbeat,
                             shutdown=shutdown, sim=sim)
    return make


def edge_env(state_dir: Path, **extra) -> dict:
    """Environment for an `edge` subprocess: own state dir, free health port, no real broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_") or k in
           ("EDGE_TEST_DATA", "EDGE_REQUIRE_INTEGRATION")}
    env.update(EDGE_STATE_DIR=str(state_dir), EDGE_HEALTH_PORT="0", EDGE_MQTT_ENABLED="false",
               EDGE_DOORBELL_ENABLED="false", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn_edge(args, env, **kw) -> subprocess.Popen:
    return subprocess.Popen([EDGE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


@contextlib.contextmanager
def running_edge(tmp_path: Path, env: dict, args=("run", "--sim"), ready_timeout: float = 30.0):
    """An `edge` subprocess with a NOTIFY_SOCKET listener, READY=1 already received; killed
    on the way out if the test did not stop it."""
    listener = NotifyListener(tmp_path / "notify.sock")
    proc = spawn_edge(list(args), {**env, "NOTIFY_SOCKET": listener.path})
    try:
        listener.wait_for("READY=1", timeout=ready_timeout)
        yield proc, listener
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        listener.close()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k"):
    """A tmpfs of `size` mounted at `path`, for full and read-only state disks; unmounted on
    the way out. Needs root: skips (fails in CI) without it."""
    from edge.testing.requirements import missing, require_program
    if os.geteuid() != 0:
        missing("mounting a small tmpfs for a full or read-only state disk needs root")
    mount, umount = require_program("mount", "mount"), require_program("umount", "mount")
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        missing(f"cannot mount a tmpfs at {path}: {result.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run([umount, str(path)], capture_output=True).returncode != 0:
            subprocess.run([umount, "-l", str(path)], capture_output=True)  # lazily, never leave it mounted


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def fill_disk(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
