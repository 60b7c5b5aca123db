"""The simulator's smoke test, run by .ci/aarch64 inside the arm64 root (under emulation),
from the checkout with README's venv: the commands a person types, with every wait on a
condition with a deadline. Exits non-zero with the reason on the first thing that fails.

1. `edge --help`, `edge config check --sim`, `edge faces enroll` of one photo;
2. `edge run --sim`, SIGINT as soon as /health answers (the face models still loading):
   exit 0, promptly (issue 15: the recognizer child must not hold the stop up);
3. `edge run --sim` again: once recognition is available, `edge sim camera show` another
   photo of the enrolled person and `edge sim press`; `edge sim status --json` shows the ring and
   the visitor recognized; SIGINT: exit 0, promptly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge.testing import waiting

EDGE = str(Path(sys.executable).with_name("edge"))
FACES = Path(os.environ.get("EDGE_TEST_DATA", "../shared/data")) / "faces"
STATE = Path(tempfile.mkdtemp(prefix="edge-smoke-"))
PORT = 8790  # the default: this runs in a network namespace of its own
# 640×480 frames: a recognition of the default burst takes about 19 s at 1280×720 under
# emulation (13-19 s at 640×480); the timeout leaves room for a loaded machine.
ENV = {**os.environ, "EDGE_STATE_DIR": str(STATE), "EDGE_HEALTH_PORT": str(PORT), "PYTHONUNBUFFERED": "1",
       "EDGE_FACES_TIMEOUT_S": "120", "EDGE_CAMERA_WIDTH": "640", "EDGE_CAMERA_HEIGHT": "480"}
START_S = 180.0  # edge run --sim until /health answers, under emulation
LOAD_S = 300.0  # until the face models are loaded
RECOGNIZE_S = 120.0  # a press until its visitor event
STOP_S = 5.0  # SIGINT until exit: the child's grace; the workers stop well within it


def fail(message: str) -> None:
    print(f"smoke FAILED: {message}", flush=True)
    sys.exit(1)


def edge(*args: str, timeout: float = 120.0) -> str:
    started = time.monotonic()
    result = subprocess.run([EDGE, *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - started
    if result.returncode != 0:
        fail(f"edge {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    print(f"smoke: edge {' '.join(args)}: ok in {took:.1f} s", flush=True)
    return result.stdout


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """The project's own wait (edge.testing.waiting), ending the smoke with the reason."""
    try:
        return waiting.wait_for(condition, timeout, interval, message=what)
    except AssertionError as exc:
        fail(str(exc))


def http(method: str, path: str, body: dict | None = None) -> tuple[int, dict] | None:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class Device:
    """`edge run --sim` in the background, its output in a file printed on failure."""

    def __init__(self, name: str):
        self.log = STATE / f"{name}.log"
        self.out = open(self.log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([EDGE, "run", "--sim"], env=ENV, stdout=self.out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            fail(f"edge run --sim exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        return True

    def wait_health(self) -> float:
        wait_for(lambda: self.alive() and http("GET", "/health") is not None, START_S, "/health to answer")
        return time.monotonic() - self.started

    def sigint(self) -> float:
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"edge run --sim still running 60 s after SIGINT:\n{self.log.read_text()[-4000:]}")
        took = time.monotonic() - sent
        self.out.close()
        if code != 0:
            fail(f"edge run --sim exited {code} after SIGINT:\n{self.log.read_text()[-4000:]}")
        if took >= STOP_S:
            fail(f"edge run --sim took {took:.1f} s to stop after SIGINT (bound {STOP_S:g} s):\n"
                 f"{self.log.read_text()[-4000:]}")
        return took


def sim_status() -> dict:
    answer = http("POST", "/sim/status", {})
    return answer[1].get("result", {}) if answer and answer[0] == 200 else {}


def child_state() -> str | None:
    return ((sim_status().get("recognition") or {}).get("child") or {}).get("state")


def main() -> None:
    help_text = edge("--help")
    if "run" not in help_text:
        fail(f"edge --help does not list `run`:\n{help_text}")
    edge("config", "check", "--sim")
    edge("faces", "enroll", "Obama", str(FACES / "obama_1.jpg"), timeout=300)

    device = Device("stop-while-loading")
    up = device.wait_health()
    child = wait_for(lambda: device.alive() and child_state() not in (None, "new") and child_state(), START_S,
                     "the recognizer child to start")
    if child != "starting":
        fail(f"the recognizer child is {child!r}, not still loading the face models: this check needs it loading")
    took = device.sigint()
    print(f"smoke: /health answered {up:.1f} s after start; SIGINT while the recognizer child loads the "
          f"face models: exit 0 in {took:.2f} s", flush=True)

    device = Device("visitor")
    up = device.wait_health()
    print(f"smoke: /health answered {up:.1f} s after start", flush=True)
    wait_for(lambda: device.alive() and (sim_status().get("recognition") or {}).get("available"), LOAD_S,
             "recognition to become available (the face models loaded)", interval=1.0)
    print(f"smoke: recognition available {time.monotonic() - device.started:.1f} s after start", flush=True)
    edge("sim", "camera", "show", str(FACES / "obama_2.jpg"))
    ring = json.loads(edge("sim", "press"))
    if not ring.get("rang"):
        fail(f"edge sim press did not ring: {ring}")
    pressed = time.monotonic()

    def visitor() -> dict | None:
        last = sim_status().get("last_visitor") or {}
        return last if last.get("event_id") == ring["event_id"] else None

    last = wait_for(lambda: device.alive() and visitor(), RECOGNIZE_S, "the ring's visitor event", interval=1.0)
    print(f"smoke: visitor event {time.monotonic() - pressed:.1f} s after the press: {json.dumps(last)}",
          flush=True)
    for line in device.log.read_text().splitlines():
        if "visitor:" in line:
            print(f"smoke: the device logged: {json.loads(line).get('msg')}", flush=True)
    status = json.loads(edge("sim", "status", "--json"))
    if status.get("rings", 0) < 1:
        fail(f"edge sim status shows no ring: {status}")
    shown = status.get("last_visitor") or {}
    if shown.get("result") != "faces" or shown.get("visitor") == "recognition unavailable":
        fail(f"the visitor was not recognized: {shown}")
    if "Obama" not in str(shown.get("visitor")):
        fail(f"the enrolled person was not recognized: {shown}")
    took = device.sigint()
    print(f"smoke: rings {status['rings']}, last visitor {shown['visitor']!r}; SIGINT: exit 0 in {took:.2f} s",
          flush=True)


if __name__ == "__main__":
    main()
