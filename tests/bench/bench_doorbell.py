"""Benchmark of the doorbell's button path (prints JSON).

(a) Press → chime pin and press → `ring` at a subscriber (a process of its own) on a local
    mosquitto, p50/p99 over `--presses` presses with cooldown 0, measured side by side in one
    run: first with the camera unplugged (no recognition: the quiet baseline), then with a real
    face in front of the camera and recognitions running back to back in the child process,
    then a bare baseline: a gpiozero mock button whose callback publishes QoS 1 with paho to
    the same broker, alone and then beside a process encoding faces back to back (the load the
    recognizer child puts on the machine). The ratio busy/quiet shows what recognition costs
    the button path (it should cost nothing: the chime is set in the press callback and the
    ring is a bus publish); the ratios over bare what the product's path (store, outbox, link)
    costs, quiet against bare alone and busy against bare under the same load. The mock button
    runs the callback in the pressing thread, as lgpio runs it in its own; press → chime is
    read from the mock pin's recorded history (clear_states() just before each press, so the
    first recorded change is the chime's delay).
(c) RSS of an `edge run --sim` runtime with the doorbell (no embedded broker) and of its
    recognition child, idle (models loaded, no ring yet) and as a series over
    `--memory-rings` recognised rings (1, 10, 50, 100, 200): memory must not grow with rings.

    python tests/bench/bench_doorbell.py [--presses 200] [--interval-s 0.1] [--memory-rings 200]
    python tests/bench/bench_doorbell.py --only-memory --memory-rings 200

Needs mosquitto and the face photos (EDGE_TEST_DATA, default ../shared/data).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from gpiozero import Button
from gpiozero.pins.mock import MockFactory

from edge.mqtt.link import MqttLink
from edge.store import DB_NAME, Store
from edge.testing.mosquitto import Mosquitto
from edge.testing.notify_socket import NotifyListener
from services.doorbell.enrollment import encode_photo, photo_source
from services.doorbell.faces_store import FACES_SCHEMA, FaceStore
from services.doorbell.testing import SimulatedDoorbell
from services.doorbell.worker import DoorbellWorker
from measures import bench_parser, percentiles, rss_mb

EDGE = str(Path(sys.executable).with_name("edge"))
NODE = "bench-door"
BARE_PIN = 17


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


# The subscriber, in a process of its own as Home Assistant is: in this process its paho
# thread would wait for the GIL and the CPU behind the device's own threads, a cost of the
# observer that the bare baseline (run with the device stopped) does not pay. It prints
# "<event_id> <time.monotonic()>" per ring; CLOCK_MONOTONIC is the same in every process.
SUBSCRIBER = """
import json, sys, time
import paho.mqtt.client as mqtt
port, topic = int(sys.argv[1]), sys.argv[2]
def connected(client, userdata, flags, rc, props):
    client.subscribe(topic, qos=1)
def subscribed(client, userdata, mid, reason_codes, props):
    print("subscribed", flush=True)
def message(client, userdata, msg):
    print(json.loads(msg.payload)["event_id"], time.monotonic(), flush=True)
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
client.on_connect, client.on_subscribe, client.on_message = connected, subscribed, message
client.connect("127.0.0.1", port)
client.loop_forever()
"""


class RingWatcher:
    """Arrival time (monotonic) of every ring at a broker subscriber in another process."""

    def __init__(self, port: int):
        self.arrivals: dict[str, float] = {}
        self.connected = threading.Event()
        self._proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(port),
                                       f"edge/{NODE}/event/doorbell.ring"], stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, name="ring-watcher", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip() == "subscribed":
                self.connected.set()
            else:
                event_id, at = line.split()
                self.arrivals[event_id] = float(at)

    def close(self):
        self._proc.terminate()
        self._proc.wait(10)
        self._reader.join(10)


def press_series(bell: SimulatedDoorbell, watcher: RingWatcher, presses: int, interval_s: float) -> dict:
    chime, button = bell.chime, bell.button
    chime_ms, pressed = [], []
    seen = len(bell.events("doorbell.ring"))
    for _ in range(presses):
        while chime.state:  # the previous chime pulse must be over, or no new edge is recorded
            time.sleep(0.005)
        chime.clear_states()
        t0 = time.monotonic()
        button.drive_low()
        rise = next(s for s in chime.states[1:] if s.state)
        chime_ms.append(rise.timestamp * 1000)
        pressed.append(t0)
        button.drive_high()
        time.sleep(interval_s)  # the pace of the presses is the benchmark's input, not a wait
    # Rings are told apart only now: looking for each one right after its press (a scan of
    # every event so far) ran in this process while its ring was on the way.
    rings = [e.event_id for e in bell.events("doorbell.ring")[seen:]]
    if len(rings) != presses:
        raise RuntimeError(f"{presses} presses rang {len(rings)} times: cooldown must be 0 for this benchmark")
    pressed_at = dict(zip(rings, pressed))  # the callback emits the ring in the pressing thread: in order
    deadline = time.monotonic() + 30
    while not all(e in watcher.arrivals for e in pressed_at) and time.monotonic() < deadline:
        time.sleep(0.01)
    ring_ms = [(watcher.arrivals[e] - t) * 1000 for e, t in pressed_at.items() if e in watcher.arrivals]
    return {"press_to_chime": percentiles(chime_ms), "press_to_ring_at_subscriber": percentiles(ring_ms),
            "rings_lost": len(pressed_at) - len(ring_ms)}


def bare_button(watcher: RingWatcher, port: int, presses: int, interval_s: float) -> dict:
    """The least any doorbell could do, on the same broker and pace: a gpiozero mock button
    whose callback publishes a QoS 1 message with paho (no chime, no store, no outbox)."""
    factory = MockFactory()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare-button")
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    pressed_at: dict[str, float] = {}
    button = Button(BARE_PIN, pin_factory=factory)
    pin = factory.pin(BARE_PIN)
    t0 = 0.0

    def on_press() -> None:
        event_id = uuid.uuid4().hex
        pressed_at[event_id] = t0
        client.publish(f"edge/{NODE}/event/doorbell.ring", json.dumps({"event_id": event_id}), qos=1)

    button.when_pressed = on_press
    try:
        if not connected.wait(10):
            raise RuntimeError("the bare publisher did not connect in 10 s")
        for _ in range(presses):
            t0 = time.monotonic()
            pin.drive_low()
            pin.drive_high()
            time.sleep(interval_s)  # the same pace as the doorbell's presses
        deadline = time.monotonic() + 30
        while not all(e in watcher.arrivals for e in pressed_at) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        button.close()
        client.loop_stop()
        client.disconnect()
    ring_ms = [(watcher.arrivals[e] - t) * 1000 for e, t in pressed_at.items() if e in watcher.arrivals]
    return {"press_to_ring_at_subscriber": percentiles(ring_ms), "rings_lost": len(pressed_at) - len(ring_ms)}


# Face encodings back to back, as the recognizer child runs them during the busy series.
ENCODE_FOREVER = ("import sys; from pathlib import Path; from services.doorbell.enrollment import encode_photo\n"
                  "print('ready', flush=True)\n"
                  "while True: encode_photo(Path(sys.argv[1]), min_face_px=60)")


def bare_button_under_load(watcher: RingWatcher, port: int, presses: int, interval_s: float, photo: Path) -> dict:
    """`bare_button` while another process keeps one core busy encoding faces."""
    load = subprocess.Popen([sys.executable, "-c", ENCODE_FOREVER, str(photo)], stdout=subprocess.PIPE, text=True)
    try:
        if load.stdout.readline().strip() != "ready":
            raise RuntimeError("the face-encoding load did not start")
        return bare_button(watcher, port, presses, interval_s)
    finally:
        load.kill()
        load.wait()


def latency(args, photos: Path, tmp: Path) -> dict:
    broker = Mosquitto(tmp / "broker", program=shutil.which("mosquitto") or "/usr/sbin/mosquitto").start()
    watcher = RingWatcher(broker.port)
    config = {"node": {"id": NODE}, "mqtt": {"host": "127.0.0.1", "port": broker.port},
              "doorbell": {"cooldown_s": 0, "chime_s": 0.05},
              "camera": {"width": 1280, "height": 720, "burst": 5, "source": str(photos / "obama_2.jpg")}}
    bell = SimulatedDoorbell(tmp / "state", config, classes=(DoorbellWorker, MqttLink))
    try:
        bell.start()
        FaceStore(bell.runtime.store).add("obama", [(photo_source(photos / "obama_1.jpg"),
                                                     encode_photo(photos / "obama_1.jpg", min_face_px=60))],
                                          time.time())
        link = bell.runtime.supervisor.runner("mqtt").worker
        recognizer = bell.worker.recognizer
        deadline = time.monotonic() + 60
        while not (link.connected and watcher.connected.is_set() and recognizer.available):
            if time.monotonic() > deadline:
                raise RuntimeError("the link, the subscriber or the recognizer did not come up in 60 s")
            time.sleep(0.05)
        camera = bell.worker.camera
        camera.unplug()
        quiet = press_series(bell, watcher, args.presses, args.interval_s)
        camera.plug()
        while bell.runtime.breakers.get("camera").state != "closed":
            time.sleep(0.05)
        before = len(bell.events("doorbell.visitor"))
        busy = press_series(bell, watcher, args.presses, args.interval_s)
        visitors = bell.events("doorbell.visitor")[before:]
        recognized = [v for v in visitors if v.data["result"] == "faces"]
        busy["recognitions_during"] = len(recognized)
        busy["recognition_ms_p50"] = round(statistics.median(v.data["recognition_ms"] for v in recognized), 1) \
            if recognized else None
        busy["named_obama"] = sum(1 for v in recognized if v.data["visitor"] == "obama")
        bell.stop()
        bare = bare_button(watcher, broker.port, args.presses, args.interval_s)
        bare_busy = bare_button_under_load(watcher, broker.port, args.presses, args.interval_s, photos / "obama_2.jpg")
    finally:
        bell.stop()
        watcher.close()
        broker.stop()
    ratio = {k: round(busy[k]["p99_ms"] / max(quiet[k]["p99_ms"], 1e-6), 2)
             for k in ("press_to_chime", "press_to_ring_at_subscriber")}
    ring = "press_to_ring_at_subscriber"
    return {"quiet_camera_unplugged": quiet, "busy_recognitions_running": busy, "bare_paho_button": bare,
            "bare_paho_button_beside_face_encoding": bare_busy,
            "p99_ratio_busy_over_quiet": ratio,
            "p99_ratio_over_bare": {"quiet": round(quiet[ring]["p99_ms"] / max(bare[ring]["p99_ms"], 1e-6), 2),
                                    "busy": round(busy[ring]["p99_ms"] / max(bare[ring]["p99_ms"], 1e-6), 2),
                                    "busy_over_bare_under_the_same_load":
                                        round(busy[ring]["p99_ms"] / max(bare_busy[ring]["p99_ms"], 1e-6), 2)}}


def memory(photos: Path, tmp: Path, rings: int) -> dict:
    """RSS of an `edge run --sim` runtime (without the simulator's embedded broker: MQTT off)
    and of its recognition child, after 1, 10, ... `rings` recognised rings."""
    state = tmp / "rss-state"
    state.mkdir()
    store = Store(state / DB_NAME, schemas=[FACES_SCHEMA])
    FaceStore(store).add("obama", [(photo_source(photos / "obama_1.jpg"),
                                    encode_photo(photos / "obama_1.jpg", min_face_px=60))], time.time())
    store.close()
    listener = NotifyListener(tmp / "notify.sock")
    env = {**os.environ, "EDGE_STATE_DIR": str(state), "EDGE_HEALTH_PORT": "0", "EDGE_MQTT_ENABLED": "false",
           "EDGE_CAMERA_SOURCE": str(photos / "obama_2.jpg"), "EDGE_CAMERA_WIDTH": "1280",
           "EDGE_CAMERA_HEIGHT": "720", "EDGE_DOORBELL_COOLDOWN_S": "0", "NOTIFY_SOCKET": listener.path}
    proc = subprocess.Popen([EDGE, "run", "--sim"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        listener.wait_for("READY=1", timeout=60)
        base = (state / "endpoint").read_text().strip()

        def sim(command: str) -> dict:
            request = urllib.request.Request(f"{base}/sim/{command}", data=b"{}", method="POST")
            return json.loads(urllib.request.urlopen(request, timeout=10).read())["result"]

        def one_ring() -> dict:
            deadline = time.monotonic() + 60
            ring = None
            while time.monotonic() < deadline:
                try:
                    ring = ring or sim("press")["event_id"]
                    status = sim("status")
                    last = status["last_visitor"]
                except OSError:
                    last = None  # still starting
                if ring and last and last["event_id"] == ring and not status["gpio"]["button"]:
                    return status
                time.sleep(0.05)
            raise RuntimeError("no visitor event within 60 s")

        series, checkpoints = [], sorted({1, 10, 50, 100, 200, rings} & set(range(1, rings + 1)))
        deadline = time.monotonic() + 120
        while not ((sim("status").get("recognition") or {}).get("available")):  # models loaded: idle
            if time.monotonic() > deadline:
                raise RuntimeError("the recognizer did not start within 120 s")
            time.sleep(0.2)
        child = sim("status")["recognition"]["pid"]
        series.append({"rings": 0, "runtime_rss_mb": rss_mb(proc.pid), "recognizer_child_rss_mb": rss_mb(child),
                       "visitor": None})
        for n in range(1, rings + 1):
            status = one_ring()
            if n in checkpoints:
                # The recognizer's own pid, as the doorbell reports it: the runtime has other
                # children (an enrollment encoder, for one), and /proc order says nothing.
                child = (status.get("recognition") or {}).get("pid")
                if child is not None and child not in children(proc.pid):
                    raise RuntimeError(f"the reported recognizer pid {child} is not a child of the runtime")
                series.append({"rings": n, "runtime_rss_mb": rss_mb(proc.pid),
                               "recognizer_child_rss_mb": rss_mb(child) if child else None,
                               "visitor": status["last_visitor"]["visitor"]})
        at = {p["rings"]: p for p in series}
        first = at.get(10) or series[0]
        return {"series": series,
                "runtime_growth_mb_from_first_checkpoint": round(series[-1]["runtime_rss_mb"] - first["runtime_rss_mb"], 1),
                "child_growth_mb_from_first_checkpoint": round((series[-1]["recognizer_child_rss_mb"] or 0)
                                                               - (first["recognizer_child_rss_mb"] or 0), 1)}
    finally:
        proc.terminate()
        proc.wait(20)
        listener.close()


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--presses", type=int, default=200, help="presses per latency series (default 200)")
    parser.add_argument("--interval-s", type=float, default=0.1, help="time between presses")
    parser.add_argument("--memory-rings", type=int, default=200, help="recognised rings for the RSS series")
    parser.add_argument("--only-memory", action="store_true", help="skip (a), the latency part")
    args = parser.parse_args()
    data = Path(os.environ.get("EDGE_TEST_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
    photos = data / "faces"
    if not (photos / "manifest.json").is_file():
        sys.exit(f"face photos not found at {photos}; set EDGE_TEST_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        report = {"cpu_count": os.cpu_count(), "presses": args.presses, "interval_s": args.interval_s,
                  "a_latency": None if args.only_memory else latency(args, photos, Path(tmp)),
                  "c_memory": memory(photos, Path(tmp), args.memory_rings)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
