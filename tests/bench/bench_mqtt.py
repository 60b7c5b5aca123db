"""Benchmark of the MQTT link (prints JSON), each figure beside its baseline from the same run:

- latency from an event on the bus to its arrival at a subscriber on a local mosquitto
  (p50/p99 over 1,000 events, one at a time), beside a plain paho QoS 1 publisher to the same
  broker (the bare minimum); the link's path includes the outbox's synchronous SQLite commit;
- outbox drain rate: 10,000 events produced while the broker is unreachable, then the time
  from the broker coming back (the reconnect included) to the last of the 10,000 distinct
  events at the subscriber (through the test TCP proxy; duplicates counted apart);
- process CPU and RSS of `edge run --sim` with the link enabled vs disabled, run side by side
  (doorbell disabled in both, so the figure is the link's own cost);
- bytes written over an idle window with the link enabled: SQLite commits (from /metrics),
  `write_bytes` (block layer) and `wchar` (every write() incl. sockets and the log pipe).

    python tests/bench/bench_mqtt.py [--idle-s 120] [--events 1000] [--outage 10000]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt

from edge import config as configmod
from edge.mqtt.link import MqttLink
from edge.assembly import all_sections
from edge.runtime import Runtime
from edge.testing.mosquitto import Mosquitto
from edge.testing.notify_socket import NotifyListener
from edge.testing.ports import free_port
from edge.testing.tcp_proxy import TcpProxy
from measures import bench_parser

EDGE = str(Path(sys.executable).with_name("edge"))
NODE = "bench"


class Arrivals:
    """A subscriber that notes the arrival time of every message."""

    def __init__(self, port: int, topic: str):
        self.times: dict[bytes, float] = {}
        self.count = 0
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{topic.replace('/', '_')}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ready.wait(10)

    def _on_message(self, client, userdata, msg):
        now = time.perf_counter()
        key = json.loads(msg.payload)["event_id"].encode() if msg.payload.startswith(b"{") else msg.payload
        with self.cond:
            self.times.setdefault(key, now)
            self.count += 1
            self.cond.notify_all()

    def wait_count(self, n: int, timeout: float = 120) -> None:
        """Until `n` distinct events arrived: a duplicate (QoS 1 redelivers) must not hide a loss."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.times) >= n, timeout):
                raise SystemExit(f"only {len(self.times)} of {n} distinct events ({self.count} messages) "
                                 f"arrived within {timeout}s")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(ordered), 3),
            "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 3)}


def runtime(state: Path, port: int, **env) -> Runtime:
    environ = {"EDGE_NODE_ID": NODE, "EDGE_HEALTH_PORT": "0", "EDGE_MQTT_HOST": "127.0.0.1",
               "EDGE_MQTT_PORT": str(port), "EDGE_MQTT_RECONNECT_MIN_S": "0.05", "EDGE_MQTT_RECONNECT_MAX_S": "0.2",
               **env}
    config = configmod.build(all_sections([MqttLink]), {}, environ, "sim")
    return Runtime(config, [MqttLink], state, sim=True, environ=environ)


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.001)


def latency(tmp: Path, broker: Mosquitto, n: int) -> dict:
    sub = Arrivals(broker.port, f"edge/{NODE}/event/#")
    rt = runtime(tmp / "lat", broker.port)
    rt.start()
    try:
        link = rt.supervisor.runner("mqtt").worker
        wait(lambda: link.connected, 10, "the link to connect")
        link_ms = []
        for i in range(n):
            t0 = time.perf_counter()
            event = rt.bus.emit("bench.tick", {"n": i})
            sub.wait_count(i + 1)
            link_ms.append(sub.times[event.event_id.encode()] - t0)
    finally:
        rt.stop()
        sub.close()

    sub = Arrivals(broker.port, "bench/bare")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare-pub")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    bare = []
    try:
        for i in range(n):
            payload = f"bare-{i}".encode()
            t0 = time.perf_counter()
            pub.publish("bench/bare", payload, qos=1)
            sub.wait_count(i + 1)
            bare.append(sub.times[payload] - t0)
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.close()
    link_p, bare_p = percentiles(link_ms), percentiles(bare)
    return {"events": n, "link": link_p, "bare_paho_qos1": bare_p,
            "p50_ratio": round(link_p["p50_ms"] / bare_p["p50_ms"], 1),
            "p99_ratio": round(link_p["p99_ms"] / bare_p["p99_ms"], 1)}


def drain(tmp: Path, broker: Mosquitto, n: int) -> dict:
    gate = free_port()  # nothing listens here during the outage: the link is refused and retries
    sub = Arrivals(broker.port, f"edge/{NODE}/event/#")
    rt = runtime(tmp / "drain", gate)
    rt.start()
    proxy = None
    try:
        link = rt.supervisor.runner("mqtt").worker
        wait(lambda: rt.lasting.peek("mqtt.subscription") is not None, 10, "the link to listen to the bus")
        t0 = time.perf_counter()
        for i in range(n):
            rt.bus.emit("bench.tick", {"n": i})
        wait(lambda: link.outbox.counts()["pending"] == n, 120, "the outbox to hold every event")
        ingest_s = time.perf_counter() - t0
        outbox_bytes = link.outbox.counts()["bytes"]
        t1 = time.perf_counter()  # the clock starts when the broker is back, reconnect included
        proxy = TcpProxy(broker.port, port=gate).start()
        wait(lambda: link.connected, 30, "the reconnect")
        reconnect_s = time.perf_counter() - t1
        sub.wait_count(n, 300)
        drain_s = time.perf_counter() - t1
    finally:
        rt.stop()
        sub.close()
        if proxy:
            proxy.close()
    return {"events": n, "outbox_bytes": outbox_bytes, "ingest_s": round(ingest_s, 3),
            "ingest_events_per_s": round(n / ingest_s), "reconnect_s": round(reconnect_s, 3),
            "drain_s": round(drain_s, 3), "drain_events_per_s": round(n / drain_s),
            "distinct_events": len(sub.times), "duplicates": sub.count - len(sub.times)}


def proc_stat(pid: int) -> dict:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss_kb = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    io = dict(line.strip().split(": ") for line in open(f"/proc/{pid}/io"))
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / ticks, "rss_mb": rss_kb / 1024,
            "wchar": int(io["wchar"]), "write_bytes": int(io["write_bytes"])}


def store_commits(state: Path) -> float:
    base = (state / "endpoint").read_text().strip()
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("edge_store_commits_total"))


def idle(tmp: Path, broker: Mosquitto, idle_s: float) -> dict:
    runs = {}
    for name, enabled in (("enabled", "true"), ("disabled", "false")):
        state = tmp / f"idle-{name}"
        listener = NotifyListener(tmp / f"notify-{name}.sock")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env.update(EDGE_STATE_DIR=str(state), EDGE_HEALTH_PORT="0", NOTIFY_SOCKET=listener.path, EDGE_NODE_ID=name,
                   EDGE_MQTT_ENABLED=enabled, EDGE_MQTT_HOST="127.0.0.1", EDGE_MQTT_PORT=str(broker.port),
                   EDGE_DOORBELL_ENABLED="false")
        proc = subprocess.Popen([EDGE, "run", "--sim"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        listener.wait_for("READY=1", timeout=60)
        runs[name] = {"proc": proc, "listener": listener, "state": state}
    try:
        time.sleep(10)  # settle: measuring a window, not waiting on a condition
        start = {n: (proc_stat(r["proc"].pid), store_commits(r["state"])) for n, r in runs.items()}
        time.sleep(idle_s)
        end = {n: (proc_stat(r["proc"].pid), store_commits(r["state"])) for n, r in runs.items()}
    finally:
        for r in runs.values():
            r["proc"].send_signal(signal.SIGTERM)
            r["proc"].wait(30)
            r["listener"].close()
    out = {}
    for n in runs:
        (a, ca), (b, cb) = start[n], end[n]
        out[n] = {"cpu_s": round(b["cpu_s"] - a["cpu_s"], 3), "rss_mb": round(b["rss_mb"], 1),
                  "store_commits": int(cb - ca), "write_bytes": b["write_bytes"] - a["write_bytes"],
                  "wchar_bytes": b["wchar"] - a["wchar"]}
    cpu_off = max(out["disabled"]["cpu_s"], 0.001)
    return {"idle_window_s": idle_s, "workers": "system (+ mqtt when enabled); doorbell disabled in both",
            **out, "cpu_ratio_enabled_vs_disabled": round(out["enabled"]["cpu_s"] / cpu_off, 2),
            "rss_ratio_enabled_vs_disabled": round(out["enabled"]["rss_mb"] / out["disabled"]["rss_mb"], 2)}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--idle-s", type=float, default=120.0, help="idle window for bytes written (default 120)")
    parser.add_argument("--events", type=int, default=1000, help="events for the latency series (default 1000)")
    parser.add_argument("--outage", type=int, default=10_000,
                        help="events raised while the broker is away, for the drain (default 10000)")
    args = parser.parse_args()
    program = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The subscriber must not be the bottleneck: mosquitto drops QoS 1 messages queued for
        # a slow subscriber beyond max_queued_messages (1000 by default).
        with Mosquitto(tmp / "broker", program=program, extra_conf="max_queued_messages 0\n") as broker:
            result = {"latency": latency(tmp, broker, args.events),
                      "outbox_drain": drain(tmp, broker, args.outage),
                      "idle": idle(tmp, broker, args.idle_s)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
