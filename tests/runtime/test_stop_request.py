"""SIGTERM stops the main loop wherever the main thread is when Python runs the handler;
only the signals installed ask for the stop; a late request from a thread is harmless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from edge.stop_request import StopRequest
from edge.testing.waiting import scaled

TESTS = Path(__file__).resolve().parents[1]

# Runs in its own process: it installs signal handlers, and a deadlock must hang only it.
SIGNAL_AT_EVERY_LINE = r"""
import os, signal, sys
from pathlib import Path
from runtime_helpers import make_config
from edge import jsonlog
from edge.runtime import Runtime

jsonlog.setup("info")  # the handler's old log line took the rate limiter's lock
state = Path(sys.argv[1])
config = make_config([], env={"EDGE_HEALTH_PORT": "0"})
LOOP = Runtime.loop.__code__

def run_once(on_line):
    runtime = Runtime(config, [], state, environ={"WATCHDOG_USEC": "80000"})  # the loop ticks every 20 ms
    runtime.start()
    runtime.stop_on_signals()
    count = 0
    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            on_line(runtime, count, frame)
        return tracer
    sys.settrace(tracer)
    try:
        return runtime.loop()
    finally:
        sys.settrace(None)
        runtime.stop()

# Where the loop's first turn ends, in line events: at its `while` line's second visit.
first_seen, turn_ends = {}, []
def measure(runtime, count, frame):
    if frame.f_code is LOOP and not turn_ends:
        if frame.f_lineno in first_seen:
            turn_ends.append(count)
            runtime.request_stop()
        else:
            first_seen[frame.f_lineno] = count
run_once(measure)
print("turn ends at", turn_ends[0], flush=True)

# A SIGTERM at each line event up to there in turn: Python runs the handler at the next
# bytecode boundary, holding whatever lock the main thread holds there.
for n in range(1, turn_ends[0] + 1):
    def signal_at(runtime, count, frame, n=n):
        if count == n:
            os.kill(os.getpid(), signal.SIGTERM)
    print("line", n, "exit", run_once(signal_at), flush=True)
"""


def test_a_sigterm_taken_at_any_line_of_the_main_loop_stops_it(tmp_path):
    # CI saw "received SIGTERM: stopping" and then a hang under qemu: the handler set a
    # threading.Event just as the loop's own wait on that Event held the Event's lock.
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_AT_EVERY_LINE, str(tmp_path / "state")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=scaled(60))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the loop did not stop after a SIGTERM; the last lines:\n{out[-3000:]}") from None
    lines = out.splitlines()
    assert proc.returncode == 0, out[-3000:]
    turn_ends = int(next(line for line in lines if line.startswith("turn ends at ")).split()[-1])
    trials = [line for line in lines if line.startswith("line ")]
    assert turn_ends > 10 and len(trials) == turn_ends, out[-3000:]
    assert all(line.endswith("exit 0") for line in trials), out[-3000:]
    assert out.count("received SIGTERM: stopping") >= len(trials), out[-3000:]


def test_only_the_installed_signals_ask_for_the_stop():
    stop = StopRequest()
    previous = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    received = []
    try:
        stop.install((signal.SIGTERM,))
        signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))  # someone else's handler
        os.kill(os.getpid(), signal.SIGUSR1)  # a signal to oneself is delivered before kill() returns
        assert stop.wait(0) is False and received == [signal.SIGUSR1]
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(0) is True and stop.signals == ["SIGTERM"]
    finally:
        stop.close()
        for signum, handler in zip((signal.SIGUSR1, signal.SIGTERM, signal.SIGINT), previous):
            signal.signal(signum, handler)


def test_a_stop_asked_after_close_is_ignored():
    # A worker thread may ask for a restart while the runtime is already stopping.
    stop = StopRequest()
    stop.close()
    stop.set()
    assert stop.requested
