"""Builders shared by the runtime tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from edge import config as configmod
from edge.breaker import BreakerBoard
from edge.bus import EventBus
from edge.health import HealthRegistry
from edge.runtime import all_sections
from edge.states import StateBoard
from edge.testing.notify_socket import NotifyListener
from edge.worker import WorkerContext

REPO = Path(__file__).resolve().parents[1]
EDGE = str(Path(sys.executable).with_name("edge"))


def make_config(classes=(), data=None, env=None, sim=True):
    return configmod.build(all_sections(classes), data or {}, env or {}, "sim" if sim else "pi")


def context_factory(health: HealthRegistry, clock):
    bus, breakers, states = EventBus(), BreakerBoard(clock), StateBoard()

    def make(worker, stopping: threading.Event, heartbeat):
        return WorkerContext(worker, stopping=stopping, clock=clock, bus=bus, store=None, breakers=breakers,
                             health=health, metrics=None, states=states, config=None, services={},
                             on_heartbeat=heartbeat)
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
