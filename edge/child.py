"""Supervised child processes: the one way the runtime runs a program of its own (the face
recognizer, the face encoder, baresip, anything native or foreign).

Responsible for: starting a child at lower CPU and IO priority in a process group of its own;
knowing when it is ready (a line it prints, or a check the owner supplies) by a deadline;
its stdout and stderr into the owner's logger, rate-limited; stopping it (SIGTERM, then
SIGKILL at a deadline) and always reaping it; when it may start again after a failure
(exponential backoff on an injected clock); a health snapshot; no orphan when the runtime
dies, even by SIGKILL.

Not responsible for: the child's protocol (its owner's), deciding that it hangs (the owner
calls kill()), or restarting it by itself: the owner consults may_start() and calls start(),
since only it knows what a start needs (a new socket, say). Blocking waits use real
monotonic time; the injected clock drives the policy (backoff, rate-limit windows).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import platform
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Mapping, Sequence

from edge.clock import SYSTEM_CLOCK, Clock

NEW, STARTING, READY, EXITED, STOPPED = "new", "starting", "ready", "exited", "stopped"

_CHECKOUT = Path(__file__).resolve().parents[1]
_POLL_S = 0.1           # how often waits look at the child meanwhile
_EXEC_TIMEOUT_S = 30.0  # the guard below execs within tens of ms; this bounds a wedged one
_MAX_LINE = 4096        # longer output lines are logged in pieces

# Runs in the child before the program, as `python -I -S -c _GUARD parent report nice
# ioprio_nr ioprio argv...`: a program of its own rather than Popen's preexec_fn, which "is
# not safe to use in the presence of threads" (subprocess docs: it can deadlock before exec).
_GUARD = """
import ctypes, os, signal, sys
parent, report, nice, ioprio_nr, ioprio, *argv = sys.argv[1:]
report = int(report)
os.set_inheritable(report, False)
def fail(err, what):
    os.write(report, f"{err} {what}".encode())
    os._exit(127)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(ctypes.c_int(1), ctypes.c_ulong(9), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
    fail(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
if os.getppid() != int(parent):
    os._exit(1)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
os.nice(int(nice))
if int(ioprio_nr) >= 0:
    libc.syscall(ctypes.c_long(int(ioprio_nr)), ctypes.c_long(1), ctypes.c_long(0), ctypes.c_long(int(ioprio)))
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    fail(exc.errno, argv[0])
"""
# Why each step: prctl(PR_SET_PDEATHSIG=1, SIGKILL=9) kills the child when the thread that
# forked it dies, and survives execve (man 2 prctl); had the runtime died before that, the
# child was already re-parented, hence getppid(). SIGTERM is reset and unblocked because an
# ignored or blocked signal is inherited across fork and execve (man 7 signal), and stop()
# relies on it ending a child even mid-import. ioprio_set(IOPRIO_WHO_PROCESS=1, self) is
# best effort (man 2 ioprio_set). The report pipe closes on exec: EOF means the program runs.


def _ioprio_syscall() -> int:
    """ioprio_set's number here (asm/unistd_64.h, unistd_32.h, asm-generic/unistd.h, arm);
    -1 where unknown. A 32-bit userland on a 64-bit kernel (Raspberry Pi OS armhf on a Pi 4)
    uses the 32-bit table, hence the pointer size rather than the machine alone."""
    machine, bits = platform.machine(), struct.calcsize("P") * 8
    if machine in ("x86_64", "amd64") or re.fullmatch(r"i[3-6]86", machine):
        return 251 if bits == 64 else 289
    if machine.startswith(("aarch64", "arm")):
        return 30 if bits == 64 else 314
    return 30 if machine == "riscv64" else -1


def python_command(python: str, module: str, function: str) -> list[str]:
    """[python, -W..., -P, -c, code] running `sys.exit(module.function())`; arguments
    appended reach it as sys.argv[1:]. A plain `python -c`, not multiprocessing: no re-import
    of the parent's __main__, no resource-tracker process. It carries the parent's -W
    options (under -W error a warning must mean the same on both sides), and -P with this
    checkout appended to sys.path, so the child imports this code, not the working directory's."""
    if not (module.replace(".", "").replace("_", "").isalnum() and function.replace("_", "").isalnum()):
        raise ValueError(f"{module}.{function} is not a Python module and function name")
    code = (f"import sys; sys.path.append({str(_CHECKOUT)!r}); "
            f"from {module} import {function}; sys.exit({function}())")
    return [python, *(f"-W{option}" for option in sys.warnoptions), "-P", "-c", code]


@dataclasses.dataclass(frozen=True)
class ChildExit:
    returncode: int  # as Popen has it: -N when signal N ended the child
    ran_for_s: float

    @property
    def code(self) -> int | None:
        return self.returncode if self.returncode >= 0 else None

    @property
    def signal(self) -> str | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def __str__(self) -> str:
        return f"exit code {self.code}" if self.signal is None else f"killed by {self.signal}"


@dataclasses.dataclass(frozen=True)
class ChildHealth:
    name: str
    state: str
    pid: int | None
    starts: int
    last_exit: str | None     # "exit code 1", "killed by SIGKILL"
    reason: str | None        # why it is not ready; None when it is
    next_start_in_s: float    # 0 when the backoff allows a start now
    last_stderr: str | None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class ChildNotReady(RuntimeError):
    """Not ready in time (`exit` None: it still runs; stop or kill it), or it ended first."""

    def __init__(self, message: str, exit: ChildExit | None):
        super().__init__(message)
        self.exit = exit


@dataclasses.dataclass(frozen=True)
class Backoff:
    """When a failed child may start again: at once after a failure that follows a stable
    run (a child killed for one hang is back for the next request), then after `first_s`,
    times `factor` up to `max_s` while it keeps failing within `stable_s` of its start."""
    first_s: float = 1.0
    factor: float = 2.0
    max_s: float = 300.0
    stable_s: float = 60.0

    def delay(self, failures: int) -> float:
        return 0.0 if failures <= 1 else min(self.max_s, self.first_s * self.factor ** (failures - 2))


@dataclasses.dataclass(frozen=True)
class OutputLimit:
    """At most `lines` output lines per `per_s` seconds reach the log (SD-card wear), then
    one "suppressed K lines" line when the window ends or the stream closes."""
    lines: int = 20
    per_s: float = 60.0


class _Spawner:
    """Forks every child from one thread that lives as long as any child it forked.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process
    (man 2 prctl: "the parent is considered to be the thread that created this process"),
    and owners start children from short-lived threads (the doorbell's recognizer-start
    thread). This thread ends once every child it forked is reaped, so none outlives the
    children (the leak check sees none), and the next start makes a new one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._requests: deque = deque()
        self._live = 0
        self._thread: threading.Thread | None = None

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        future: Future = Future()
        with self._cond:
            self._live += 1
            self._requests.append((argv, kwargs, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edge-child-spawner", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            return future.result()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """A child forked here has been reaped."""
        with self._cond:
            self._live -= 1
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._requests or not self._live)
                if not self._requests:
                    self._thread = None
                    return
                argv, kwargs, future = self._requests.popleft()
            try:
                future.set_result(subprocess.Popen(argv, **kwargs))
            except Exception as exc:  # handed to the caller, which raises it
                future.set_exception(exc)


_SPAWNER = _Spawner()


class SupervisedChild:
    """One child program at a time, started as often as its owner needs. `ready_line` (a
    regex searched in each stdout line, or a predicate) says when it is ready; owners with
    a channel of their own pass a check to wait_ready() instead. Thread-safe."""

    def __init__(self, name: str, log: logging.Logger, *, clock: Clock = SYSTEM_CLOCK, niceness: int = 10,
                 io_priority: int | None = 7, ready_line: str | re.Pattern | Callable[[str], bool] | None = None,
                 backoff: Backoff = Backoff(), output: OutputLimit = OutputLimit()):
        self.name, self.log, self.clock, self.backoff, self.output = name, log, clock, backoff, output
        self.niceness, self.io_priority = niceness, io_priority  # io_priority: best-effort level 0-7
        self._ready_line = re.compile(ready_line).search if isinstance(ready_line, str) else (
            ready_line.search if isinstance(ready_line, re.Pattern) else ready_line)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._proc: subprocess.Popen | None = None
        self._readers: list[threading.Thread] = []
        self._state, self._reason = NEW, "not started"
        self._starts = self._failures = 0
        self._started_at = self.next_start_at = 0.0  # next_start_at: on `clock`, see may_start()
        self._last_exit: ChildExit | None = None
        self._stopping, self._kill_reason = False, None
        self._window_at: float | None = None
        self._window_lines = self._suppressed = 0
        self._last_stderr: str | None = None

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
              pass_fds: Sequence[int] = ()) -> int:
        """Run `argv` (looked up on PATH); returns its pid. OSError when it cannot run (no
        such program, out of processes), leaving nothing behind."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise RuntimeError(f"{self.name} is already running (pid {self._proc.pid}); stop it first")
            self._reap_locked()
        report_r, report_w = os.pipe()
        io_nr, ioprio = (-1, -1) if self.io_priority is None else (_ioprio_syscall(), (2 << 13) | self.io_priority)
        guarded = [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), str(report_w), str(self.niceness),
                   str(io_nr), str(ioprio), *argv]  # 2 << 13: IOPRIO_CLASS_BE (man 2 ioprio_set)
        try:
            try:
                # A process group of its own: Ctrl-C in a terminal goes to the runtime, which
                # stops the child in order, instead of interrupting it mid-call. Not a session
                # of its own: with autogroup scheduling (sched_autogroup_enabled, man 7 sched)
                # a new session is a new task group, the CPU is shared between groups, and the
                # child's nice value would only rank it against its own threads, so a busy
                # recognizer took as much CPU as all the runtime's threads together.
                proc = _SPAWNER.popen(guarded, pass_fds=(*pass_fds, report_w), env=env, cwd=cwd,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      process_group=0)
            finally:
                os.close(report_w)
            failure = _exec_failure(report_r, self.name)
        finally:
            os.close(report_r)
        if failure is not None:
            proc.kill()
            proc.communicate()  # reaps it and closes its pipes
            _SPAWNER.release()
            raise failure
        with self._lock:
            self._proc, self._stopping, self._kill_reason = proc, False, None
            self._state, self._reason = STARTING, "starting"
            self._starts += 1
            self._started_at = self.clock.monotonic()
            self._readers = [threading.Thread(target=self._read, args=(proc, stream, level, level == logging.INFO),
                                              name=f"{self.name}-{label}", daemon=True)
                             for stream, level, label in ((proc.stdout, logging.INFO, "stdout"),
                                                          (proc.stderr, logging.WARNING, "stderr"))]
        for reader in self._readers:
            reader.start()
        return proc.pid

    def wait_ready(self, timeout_s: float, check: Callable[[float], bool] | None = None) -> None:
        """Wait until the child is ready: it printed its `ready_line`, or `check(slice_s)`
        (called repeatedly, may block up to slice_s) returned True. ChildNotReady when it
        ends first or `timeout_s` passes; exceptions from `check` pass through."""
        if check is None and self._ready_line is None:
            raise ValueError(f"{self.name}: no ready_line and no check: nothing says when it is ready")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if check is not None and self._state == STARTING and check(min(remaining, _POLL_S)):
                self._mark_ready(self._proc)
            if self._state == READY:
                return
            ended = self.poll()
            if ended is not None or self._proc is None:
                raise ChildNotReady(f"{self.name} ended before it was ready ({ended or self._reason})", ended)
            if time.monotonic() >= deadline:
                raise ChildNotReady(f"{self.name} did not become ready within {timeout_s:g} s; it is still "
                                    f"running", None)
            if check is None:
                with self._cond:
                    self._cond.wait_for(lambda: self._state != STARTING, min(remaining, _POLL_S))

    def _mark_ready(self, proc: subprocess.Popen | None) -> None:
        with self._cond:
            if proc is not None and self._proc is proc and self._state == STARTING:
                self._state, self._reason = READY, None
                self._cond.notify_all()

    def kill(self, reason: str = "killed") -> None:
        """SIGKILL now (its owner found it hung); wait() or stop() reaps it. A failure for
        the backoff; `reason` shows in health."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return  # nothing to kill: the next poll() records how it ended
            self._kill_reason = self._kill_reason or reason
        proc.kill()  # Popen polls first: never a signal to a reaped, possibly reused, pid

    def stop(self, timeout_s: float = 5.0, *, exit_grace_s: float = 0.0) -> ChildExit | None:
        """End the child and reap it: SIGTERM, then SIGKILL once `timeout_s` has passed. A
        ready child its owner has asked to exit (through its own protocol) gets
        `exit_grace_s` before SIGTERM; a starting one gets SIGTERM at once, since it cannot
        have read such a request yet (a Python child importing dlib dies on it at once).
        Returns how it ended, None if it never ran."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return self._last_exit
            if proc.poll() is None:
                self._stopping = True  # else it ended by itself: a failure, not a stop
            grace = min(exit_grace_s, timeout_s) if self._state == READY else 0.0
        deadline = time.monotonic() + timeout_s
        if not _exited_within(proc, grace):
            proc.terminate()
            if not _exited_within(proc, deadline - time.monotonic()):
                proc.kill()
                proc.wait()
        return self._reaped()

    def wait(self, timeout_s: float) -> ChildExit | None:
        """How the child ended, reaping it, if it does within `timeout_s`; else None."""
        proc = self._proc
        if proc is None:
            return self._last_exit
        return self._reaped() if _exited_within(proc, timeout_s) else None

    def poll(self) -> ChildExit | None:
        """How the child ended (reaping it) if it has; None while it runs or never ran."""
        with self._lock:
            self._reap_locked()
            return None if self._proc is not None else self._last_exit

    def _reaped(self) -> ChildExit | None:
        with self._lock:
            self._reap_locked()
            readers = [r for r in self._readers if r is not threading.current_thread()]
        for reader in readers:  # its output is in the log when stop() or wait() returns,
            reader.join(1.0)    # unless a grandchild holds the pipe: then the reader ends with it
        return self._last_exit

    def _reap_locked(self) -> None:
        """Record how a child that has ended ended, once, and free its spawner slot."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        now = self.clock.monotonic()
        ended = self._last_exit = ChildExit(proc.returncode, now - self._started_at)
        self._proc = None
        _SPAWNER.release()
        if self._stopping and self._kill_reason is None:
            self._state, self._reason = STOPPED, "stopped"
            return
        # Any other end is a failure for the backoff, exit code 0 too: a long-lived child
        # that keeps exiting must not be restarted in a tight loop.
        self._failures = 1 if ended.ran_for_s >= self.backoff.stable_s else self._failures + 1
        self.next_start_at = now + self.backoff.delay(self._failures)
        self._state = EXITED
        self._reason = f"{self._kill_reason} ({ended})" if self._kill_reason else f"exited ({ended})"
        self.log.log(logging.INFO if ended.returncode == 0 else logging.WARNING, "%s[%d] %s", self.name, proc.pid,
                     self._reason)

    def may_start(self, now: float | None = None) -> bool:
        """Whether the backoff allows a start at `now` (default: the clock's now)."""
        return (self.clock.monotonic() if now is None else now) >= self.next_start_at

    @property
    def state(self) -> str:
        return self._state

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and self.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def health(self) -> ChildHealth:
        pid = self.pid
        with self._lock:
            return ChildHealth(self.name, self._state, pid, self._starts,
                               None if self._last_exit is None else str(self._last_exit), self._reason,
                               max(0.0, self.next_start_at - self.clock.monotonic()), self._last_stderr)

    def _read(self, proc: subprocess.Popen, stream, level: int, watch_ready: bool) -> None:
        """One stream's lines into the log until the child closes it (at exit, normally)."""
        with stream:
            for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
                line = raw.decode(errors="replace").rstrip("\r\n")
                if watch_ready and self._ready_line is not None and self._ready_line(line):
                    self._mark_ready(proc)
                self._log_line(proc.pid, level, line)
        self._log_line(proc.pid, level, None)

    def _log_line(self, pid: int, level: int, line: str | None) -> None:
        """Log a line within the OutputLimit; what was suppressed is reported at the first
        line of the next window, or at the end of a stream (line None)."""
        with self._lock:
            now = self.clock.monotonic()
            new_window = self._window_at is None or now - self._window_at >= self.output.per_s
            if (line is None or new_window) and self._suppressed:
                self.log.warning("%s[%d]: suppressed %d lines (more than %d in %g s)", self.name, pid,
                                 self._suppressed, self.output.lines, self.output.per_s)
                self._suppressed = 0
            if line is None:
                return
            if new_window:
                self._window_at, self._window_lines = now, 0
            if level >= logging.WARNING and line.strip():
                self._last_stderr = line.strip()[-300:]
            if self._window_lines < self.output.lines:
                self._window_lines += 1
                self.log.log(level, "%s[%d]: %s", self.name, pid, line, extra={"child": self.name})
            else:
                self._suppressed += 1


def _exec_failure(fd: int, name: str) -> OSError | None:
    """None once the guard has exec'd the program (EOF), else why it could not run it."""
    data, deadline = b"", time.monotonic() + _EXEC_TIMEOUT_S
    while select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        chunk = os.read(fd, 512)
        if not chunk:
            code, _, what = data.decode(errors="replace").partition(" ")
            return OSError(int(code), os.strerror(int(code)), what) if data else None
        data += chunk
    return OSError(errno.ETIMEDOUT, f"{name} did not start within {_EXEC_TIMEOUT_S:.0f} s")


def _exited_within(proc: subprocess.Popen, timeout_s: float) -> bool:
    try:
        proc.wait(max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        return False
    return True
