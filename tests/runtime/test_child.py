"""The supervised child helper (edge/child.py) with tiny Python children: real processes,
real signals; backoff and rate limits on a fake clock; waits on conditions, never sleeps."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.child import Backoff, ChildNotReady, OutputLimit, SupervisedChild
from edge.clock import FakeClock
from edge.testing.requirements import require_program
from edge.testing.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
# Generous bounds for a loaded CI machine; what they catch is seconds or minutes off.
PROMPT_S = 10.0


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


SLEEPS = py("import threading; threading.Event().wait()")
READY_THEN_SLEEPS = py("import threading; print('ready', flush=True); threading.Event().wait()")


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, containing: str = "") -> list[str]:
        return [r.getMessage() for r in self.records if containing in r.getMessage()]


@pytest.fixture
def log(request):
    """A logger of the test's own, and what reached it (`log.records`)."""
    logger = logging.getLogger(f"test.child.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    records = Records()
    logger.addHandler(records)
    logger.records = records
    yield logger
    logger.removeHandler(records)


@pytest.fixture
def make_child(log):
    """`make_child(name, **options)`: children that are stopped after the test."""
    made: list[SupervisedChild] = []

    def make(name: str = "child", **options) -> SupervisedChild:
        made.append(SupervisedChild(name, log, **options))
        return made[-1]

    yield make
    for child in made:
        child.stop(timeout_s=1.0)


def alive(pid: int) -> bool:
    """Running (not a zombie): what a process re-parented to a PID 1 that does not reap looks like."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_child_is_ready_when_it_prints_its_ready_line(make_child, log):
    child = make_child("greeter", ready_line=r"^listening on port \d+$")
    pid = child.start(py("print('loading', flush=True); print('listening on port 5060', flush=True);"
                         "import threading; threading.Event().wait()"))
    child.wait_ready(PROMPT_S)
    assert child.state == "ready" and child.pid == pid
    assert log.records.messages() == [f"greeter[{pid}]: loading", f"greeter[{pid}]: listening on port 5060"]


def test_child_is_ready_when_the_owners_check_says_so(make_child):
    reader, writer = os.pipe()
    child = make_child("checked")
    try:
        child.start(py("import os, sys, threading; os.write(int(sys.argv[1]), b'up'); threading.Event().wait()",
                       str(writer)), pass_fds=(writer,))
        os.close(writer)
        child.wait_ready(PROMPT_S, check=lambda slice_s: bool(select.select([reader], [], [], slice_s)[0]))
        assert child.state == "ready"
        assert os.read(reader, 10) == b"up"
    finally:
        os.close(reader)


def autogroup(pid: int | str) -> str | None:
    """The task's autogroup, or None where autogroups do not apply: a kernel without
    CONFIG_SCHED_AUTOGROUP, or a task in a cgroup's CPU task group (a container), where the
    kernel shows an empty file and sessions do not change CPU shares."""
    try:
        fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    except FileNotFoundError:
        return None
    return fields[0] if fields else None


def test_child_runs_in_its_own_process_group_at_lower_cpu_and_io_priority(make_child):
    """Its own process group, so Ctrl-C in the runtime's terminal does not reach it; the
    runtime's session and so its autogroup, so its nice value ranks it below the runtime's
    threads (in a task group of its own it would get an equal share of the CPU)."""
    ionice = require_program("ionice", "util-linux")
    child = make_child("background", niceness=5, ready_line="ready")
    pid = child.start(READY_THEN_SLEEPS)
    child.wait_ready(PROMPT_S)
    assert os.getpgid(pid) == pid != os.getpgid(0)
    assert os.getsid(pid) == os.getsid(0)
    assert autogroup(pid) == autogroup("self")
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    io = subprocess.run([ionice, "-p", str(pid)], capture_output=True, text=True, check=True).stdout
    assert io.strip() == "best-effort: prio 7"


def test_readiness_timeout_is_a_clear_error_and_the_child_keeps_running(make_child):
    child = make_child("mute", ready_line="ready")
    child.start(SLEEPS)
    started = time.monotonic()
    with pytest.raises(ChildNotReady, match=r"^mute did not become ready within 0\.3 s; it is still running$") as info:
        child.wait_ready(0.3)
    assert 0.3 <= time.monotonic() - started < PROMPT_S
    assert info.value.exit is None and child.running  # its owner decides: stop() or kill()


def test_child_that_exits_before_it_is_ready_is_reported_with_its_exit_code(make_child):
    child = make_child("broken", ready_line="ready")
    child.start(py("import sys; print('no config', file=sys.stderr); sys.exit(2)"))
    with pytest.raises(ChildNotReady, match=r"broken ended before it was ready \(exit code 2\)") as info:
        child.wait_ready(PROMPT_S)
    assert info.value.exit.code == 2
    child.wait(PROMPT_S)
    assert child.health().last_stderr == "no config"


def test_a_program_that_cannot_run_raises_and_leaves_nothing_behind(make_child, tmp_path):
    child = make_child("missing")
    open_fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        child.start([str(tmp_path / "no-such-program")])
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert (child.state, child.health().starts, child.pid) == ("new", 0, None)


def test_crash_loop_backs_off_exponentially_on_the_injected_clock(make_child):
    clock = FakeClock()
    child = make_child("crasher", clock=clock, backoff=Backoff(first_s=1.0, factor=2.0, max_s=4.0, stable_s=30.0))
    delays = []
    for _ in range(5):
        assert child.may_start()
        child.start(py("import sys; sys.exit(3)"))
        assert child.wait(PROMPT_S).code == 3
        delay = child.next_start_at - clock.monotonic()
        delays.append(delay)
        if delay:
            assert not child.may_start(clock.monotonic() + delay - 0.001)
            assert child.health().next_start_in_s == delay
        clock.advance(delay)
    assert delays == [0.0, 1.0, 2.0, 4.0, 4.0]  # the first at once, then doubling up to max_s
    assert child.health().starts == 5 and child.health().last_exit == "exit code 3"


def test_a_failure_after_a_stable_run_restarts_at_once(make_child):
    clock = FakeClock()
    child = make_child("steady", clock=clock, ready_line="ready", backoff=Backoff(first_s=1.0, stable_s=30.0))
    for _ in range(3):  # quick failures: the backoff grows
        child.start(py("import sys; sys.exit(1)"))
        child.wait(PROMPT_S)
        clock.advance(child.next_start_at - clock.monotonic())
    child.start(READY_THEN_SLEEPS)
    child.wait_ready(PROMPT_S)
    clock.advance(30.0)
    child.kill("hung")
    child.wait(PROMPT_S)
    assert child.next_start_at == clock.monotonic() and child.may_start()


def test_hung_child_is_killed_and_health_says_why(make_child):
    child = make_child("hanger", ready_line="ready")
    pid = child.start(READY_THEN_SLEEPS)
    child.wait_ready(PROMPT_S)
    child.kill("no answer within 1.0 s")
    ended = child.wait(PROMPT_S)
    assert ended.signal == "SIGKILL" and ended.code is None
    health = child.health()
    assert (health.state, health.pid, health.starts) == ("exited", None, 1)
    assert health.last_exit == "killed by SIGKILL"
    assert health.reason == "no answer within 1.0 s (killed by SIGKILL)"
    assert not alive(pid)


def test_child_ignoring_sigterm_is_killed_at_the_deadline(make_child):
    child = make_child("stubborn", ready_line="ready")
    child.start(py("import signal, threading; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                   "print('ready', flush=True); threading.Event().wait()"))
    child.wait_ready(PROMPT_S)
    started = time.monotonic()
    ended = child.stop(timeout_s=0.5)
    assert 0.5 <= time.monotonic() - started < PROMPT_S
    assert ended.signal == "SIGKILL" and child.state == "stopped"


def test_ready_child_gets_its_exit_grace_before_sigterm(make_child):
    child = make_child("polite", ready_line="ready")
    # Exits on its own a moment after it is ready, as a child asked to quit over its protocol.
    child.start(py("import time; print('ready', flush=True); time.sleep(0.3)"))
    child.wait_ready(PROMPT_S)
    assert child.stop(timeout_s=PROMPT_S, exit_grace_s=PROMPT_S).code == 0
    assert child.health().reason == "stopped"


def test_child_still_starting_is_terminated_at_once_by_stop(make_child):
    child = make_child("loader", ready_line="ready")
    child.start(py("import time; time.sleep(10); print('ready')"))  # like importing dlib from an SD card
    started = time.monotonic()
    ended = child.stop(timeout_s=5.0, exit_grace_s=5.0)  # no grace: it cannot have read a quit request
    assert time.monotonic() - started < 1.5
    assert ended.signal == "SIGTERM"


def test_output_lines_reach_the_logger_rate_limited(make_child, log):
    clock = FakeClock()
    child = make_child("chatty", clock=clock, output=OutputLimit(lines=5, per_s=10.0))
    # stdout only: two threads read the two pipes, so across them the order is not defined
    pid = child.start(py("for i in range(50): print('line', i)"))
    child.wait(PROMPT_S)  # the readers have finished when it returns
    assert log.records.messages(": line ") == [f"chatty[{pid}]: line {i}" for i in range(5)]
    assert log.records.messages("suppressed") == [f"chatty[{pid}]: suppressed 45 lines (more than 5 in 10 s)"]
    clock.advance(10.0)  # a new window
    pid = child.start(py("import sys; print('again'); print('warned', file=sys.stderr)"))
    child.wait(PROMPT_S)
    assert log.records.messages("again") == [f"chatty[{pid}]: again"]
    warned = [r for r in log.records.records if r.getMessage().endswith("warned")]
    assert [r.levelno for r in warned] == [logging.WARNING]  # stderr lines are warnings


def test_stop_reaps_the_child_and_leaves_no_zombie(make_child):
    child = make_child("reaped", ready_line="ready")
    pid = child.start(READY_THEN_SLEEPS)
    child.wait_ready(PROMPT_S)
    assert child.stop(timeout_s=PROMPT_S).signal == "SIGTERM"
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already waited for: not our child any more
    assert not alive(pid) and child.pid is None and child.health().state == "stopped"


# Started by the test as a runtime of its own: it starts the child from a thread that then
# ends, proves the child still answers after that thread is gone, prints its pid and waits
# to be killed.
PARENT = r'''
import logging, os, sys, threading
from edge.child import SupervisedChild
from edge.testing.waiting import wait_for

answered = threading.Event()
class Watch(logging.Handler):
    def emit(self, record):
        if record.getMessage().endswith("echo ping"):
            answered.set()
log = logging.getLogger("parent")
log.addHandler(Watch())
log.setLevel(logging.INFO)
child = SupervisedChild("echo", log, ready_line="ready")
ping_r, ping_w = os.pipe()
ECHO = "import os, sys\nprint('ready', flush=True)\nfor line in os.fdopen(int(sys.argv[1])): print('echo', line.strip(), flush=True)"

def start():
    child.start([sys.executable, "-c", ECHO, str(ping_r)], pass_fds=(ping_r,))
    child.wait_ready(30)

starter = threading.Thread(target=start, name="short-lived-starter")
starter.start()
starter.join()
# PR_SET_PDEATHSIG would fire as the kernel releases the thread that forked the child.
wait_for(lambda: not os.path.exists(f"/proc/self/task/{starter.native_id}"), 30, message="the thread gone")
os.write(ping_w, b"ping\n")
if not answered.wait(30):
    sys.exit("the child did not answer after the thread that started it ended")
print(child.pid, flush=True)
threading.Event().wait()
'''


def test_child_outlives_the_thread_that_started_it_and_dies_with_a_killed_runtime():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        line = parent.stdout.readline()  # the parent's own waits are bounded: it answers or exits
        assert line.strip().isdigit(), f"the parent failed: {line!r}, exit code {parent.poll()}"
        child_pid = int(line)
        assert alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # as the OOM killer or `kill -9` would
        parent.wait(PROMPT_S)
        wait_for(lambda: not alive(child_pid), PROMPT_S, message="the orphaned child to die")
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait(PROMPT_S)
        parent.stdout.close()
        if child_pid is not None and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)  # the test failed: do not leave it running
