"""Benchmark of the printer link (prints JSON): lines per second against the simulated Marlin
printer throttled to a real baud rate (default 250,000), as a fraction of the wire ceiling
measured in the same run.

- wire ceiling: raw bytes pushed through the simulated wire as fast as it takes them (the
  same throttle the printer sees), then bytes/s ÷ the job's average framed line length;
  the nominal ceiling (baud/10 bytes/s) is given beside it, since the simulated wire itself
  runs a little below nominal on a loaded machine;
- one line in flight (window 1, what works with every firmware);
- a window (ADVANCED_OK firmware, window "auto"), the default where the firmware allows it;
- the window again while the doorbell's face recognizer (its real child process, on the face
  photos) recognises back to back: the rate, and the longest stall in the stream of
  acknowledged lines, beside the quiet run;
- the emergency stop: from `emergency_stop()` to the firmware holding M112, beside the time
  one line takes on the wire;
- host CPU per 1,000 lines in each run: the link's thread alone, and this whole process
  (which also samples the stream every 5 ms for the stall figure).

The simulated printer runs in a child process (a printer is another device, and its CPU
must not count as the host's). Reference (issue 12): one line in flight at 250 kbaud reached
64 % of the ceiling with a good host, a window of 4 reached 91 %; goals: >= 90 % with the
window, >= 64 % with one line in flight.

    python tests/bench/bench_printer.py [--lines 5000] [--baud 250000] [--no-recognition]

Figures compare only with the ceiling of the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hardware.printer import SerialPort, SimulatedMarlin  # noqa: E402
from services.printer import marlin  # noqa: E402
from services.printer.sender import END, JobLine, Sender  # noqa: E402
from measures import bench_parser  # noqa: E402


def serve_fake(path: str, baud: int, advanced_ok: bool) -> None:
    """The child: a simulated printer until stdin closes; `count` answers lines received."""
    fake = SimulatedMarlin(path, baud=baud, advanced_ok=advanced_ok, reset_on_open=False).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(fake.received_lines, flush=True)
        elif line.strip() == "m112":  # CLOCK_MONOTONIC is one clock for every process
            print(fake.last_m112_at or "none", flush=True)
    fake.close()


class FakePrinter:
    def __init__(self, path: Path, baud: int, advanced_ok: bool):
        self.path = path
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-fake", str(path), "--baud", str(baud)]
                                     + (["--advanced-ok"] if advanced_ok else []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the simulated printer did not start")

    def received(self) -> int:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def m112_at(self) -> float | None:
        self.proc.stdin.write("m112\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        return None if answer == "none" else float(answer)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def job(lines: int) -> list[str]:
    return [f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 180}.{i % 3} E{i * 0.01:.2f}" for i in range(lines)]


def average_framed(commands: list[str]) -> float:
    return sum(len(marlin.frame(i + 1, c)) for i, c in enumerate(commands)) / len(commands)


def wire_ceiling(tmp: Path, baud: int, nbytes: int) -> float:
    """Bytes per second the simulated wire really moves (unnumbered M400s, replies drained)."""
    fake = FakePrinter(tmp / "wire", baud, False)
    port = SerialPort(str(fake.path), baud)
    port.open()
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            port.read_lines()
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    line = b"M400 ; padding to a job line's length\n"
    count = max(1, nbytes // len(line))
    before = fake.received()
    started = time.perf_counter()
    for start in range(0, count, 50):  # in pieces: one huge write would outlast the write timeout
        port.write(line * min(50, count - start))
    while fake.received() - before < count:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    reader.join()
    port.close()
    fake.close()
    return count * len(line) / elapsed


class Feed:
    def __init__(self, commands: list[str]):
        self._lines = iter([JobLine(i + 1, 0, c) for i, c in enumerate(commands)] + [END])

    def take(self):
        return next(self._lines, None)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stream(tmp: Path, name: str, baud: int, commands: list[str], *, window, advanced_ok: bool) -> dict:
    fake = FakePrinter(tmp / name, baud, advanced_ok)
    port = SerialPort(str(fake.path), baud)
    port.open()
    events = queue.SimpleQueue()
    sender = Sender(port, events, window=window, baud=baud, timeout_s=5.0)
    sender.start()
    try:
        first = events.get(timeout=15)
        if first.kind != "synced":
            raise RuntimeError(f"no sync: {first}")
        samples, stop = [], threading.Event()

        def watch():  # the longest time no job line was acknowledged
            last, last_at = 0, time.perf_counter()
            while not stop.is_set():
                now, acked = time.perf_counter(), sender.job_lines_acked
                if acked != last:
                    samples.append(now - last_at)
                    last, last_at = acked, now
                time.sleep(0.005)
        watcher = threading.Thread(target=watch, daemon=True)
        clock = time.pthread_getcpuclockid(sender._thread.ident)  # the link thread's own CPU time
        cpu, link_cpu, started = cpu_s(), time.clock_gettime(clock), time.perf_counter()
        watcher.start()
        sender.set_feed(Feed(commands))
        while True:
            event = events.get(timeout=600)
            if event.kind == "job_drained":
                break
            if event.kind in ("fatal", "link_failed", "gone"):
                raise RuntimeError(f"the job failed: {event}")
        elapsed = time.perf_counter() - started
        used, link_used = cpu_s() - cpu, time.clock_gettime(clock) - link_cpu
        stop.set()
        watcher.join()
        counters = sender.snapshot()["counters"]
        return {"lines": len(commands), "window_lines": sender.window_limits()[0], "seconds": round(elapsed, 2),
                "lines_per_s": round(len(commands) / elapsed, 1),
                "link_thread_cpu_ms_per_1000_lines": round(link_used * 1000 / len(commands) * 1000, 1),
                "process_cpu_ms_per_1000_lines": round(used * 1000 / len(commands) * 1000, 1),
                "longest_stall_ms": round(max(samples, default=0) * 1000, 1), "resends": counters["resends"],
                "timeouts": counters["timeouts"]}
    finally:
        sender.stop()
        port.close()
        fake.close()


def emergency_stop(tmp: Path, baud: int, commands: list[str]) -> dict:
    """M112 in the middle of a windowed stream: how long until the firmware has it."""
    fake = FakePrinter(tmp / "estop", baud, True)
    port = SerialPort(str(fake.path), baud)
    port.open()
    events = queue.SimpleQueue()
    sender = Sender(port, events, window="auto", baud=baud, timeout_s=5.0)
    sender.start()
    try:
        events.get(timeout=15)
        sender.set_feed(Feed(commands))
        while sender.job_lines_acked < min(200, len(commands) // 2):
            time.sleep(0.005)
        sent_at = time.monotonic()
        sender.emergency_stop()
        deadline = sent_at + 5
        while (arrived := fake.m112_at()) is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return {"latency_ms": round((arrived - sent_at) * 1000, 2) if arrived else None}
    finally:
        sender.stop()
        port.close()
        fake.close()


class Recognitions:
    """The doorbell's recognizer child recognising a face photo back to back (the CPU load
    the printer link must not notice)."""

    def __init__(self):
        import numpy as np
        from PIL import Image

        from edge.testing.requirements import find_test_data
        from services.doorbell.recognizer_child import RecognizerProcess

        photo = sorted((find_test_data() / "faces").glob("*.jpg"))[0]
        self.frame = np.asarray(Image.open(photo).convert("RGB"))
        self.recognizer = RecognizerProcess(options={"tolerance": 0.6, "min_face_px": 60}, start_timeout_s=120)
        if not self.recognizer.start():
            raise RuntimeError(f"the recognizer did not start: {self.recognizer.reason}")
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.recognizer.recognize([self.frame], timeout_s=60)
            self.count += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(120)
        self.recognizer.stop()


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--lines", type=int, default=5000, help="job length per run (default 5000)")
    parser.add_argument("--baud", type=int, default=250000, help="the simulated wire's speed (default 250000)")
    parser.add_argument("--no-recognition", action="store_true", help="skip the run beside the face recognizer")
    parser.add_argument("--serve-fake", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--advanced-ok", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.serve_fake, args.baud, args.advanced_ok)
        return 0
    commands = job(args.lines)
    line_bytes = average_framed(commands)
    with tempfile.TemporaryDirectory(prefix="bench-printer-") as tmp:
        tmp = Path(tmp)
        print(f"wire ceiling at {args.baud} baud...", file=sys.stderr)
        wire = wire_ceiling(tmp, args.baud, 60_000)
        ceiling = wire / line_bytes
        result = {"baud": args.baud, "average_line_bytes": round(line_bytes, 1),
                  "wire_bytes_per_s": round(wire), "nominal_bytes_per_s": args.baud // 10,
                  "ceiling_lines_per_s": round(ceiling, 1)}
        print("one line in flight...", file=sys.stderr)
        one = stream(tmp, "one", args.baud, commands, window=1, advanced_ok=False)
        print("window (ADVANCED_OK, auto)...", file=sys.stderr)
        win = stream(tmp, "window", args.baud, commands, window="auto", advanced_ok=True)
        nominal = args.baud / 10 / line_bytes
        result["nominal_ceiling_lines_per_s"] = round(nominal, 1)
        for run in (one, win):
            run["fraction_of_ceiling"] = round(run["lines_per_s"] / ceiling, 3)
            run["fraction_of_nominal_ceiling"] = round(run["lines_per_s"] / nominal, 3)
        print("emergency stop...", file=sys.stderr)
        estop = emergency_stop(tmp, args.baud, commands)
        estop["line_time_ms"] = round(line_bytes * 10 / args.baud * 1000, 2)
        estop["within_one_line_time"] = estop["latency_ms"] is not None and estop["latency_ms"] <= estop["line_time_ms"]
        result.update({"one_in_flight": one, "window": win, "emergency_stop": estop,
                       # judged as issue 12 defines them: against the ceiling measured in this run
                       "goals": {"window_at_least_0.90": win["fraction_of_ceiling"] >= 0.90,
                                 "one_in_flight_at_least_0.64": one["fraction_of_ceiling"] >= 0.64}})
        if not args.no_recognition:
            print("window beside the face recognizer...", file=sys.stderr)
            try:
                with Recognitions() as load:
                    busy = stream(tmp, "busy", args.baud, commands, window="auto", advanced_ok=True)
                busy["recognitions_during"] = load.count
                busy["fraction_of_ceiling"] = round(busy["lines_per_s"] / ceiling, 3)
                busy["rate_ratio_busy_over_quiet"] = round(busy["lines_per_s"] / win["lines_per_s"], 3)
                result["window_while_recognising"] = busy
            except Exception as exc:  # no face library or photos here: say so in the result
                result["window_while_recognising"] = {"skipped": f"{type(exc).__name__}: {exc}"}
        result["machine"] = {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
