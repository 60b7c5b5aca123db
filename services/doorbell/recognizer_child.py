# About 620 lines, in one file on purpose: both ends of one wire protocol (the parent's
# RecognizerProcess and the child's `main`) live together, so a change to a message is made
# on both sides at once; the process lifecycle itself is edge/child.py's.
"""Runs face recognition in a child process that the doorbell worker can kill and restart.

dlib is native code: a hang or a crash in it must not freeze the runtime, and its CPU work
must not hold the parent's GIL against the button path. So `RecognizerProcess` starts a
child Python process (this module's `main`) through the runtime's child helper
(edge.child: lower CPU and IO priority, its output in the doorbell's log, no orphan if the
runtime dies), hands it bursts of frames and waits for the answer with a timeout; a child
that dies or overruns is killed and a new one started at once, so the next ring finds the
models already loaded (if it keeps failing, the helper's backoff spaces the restarts).

Not responsible for: the recognition itself (recognition.py), cameras, storing faces,
signals and reaping (edge.child).

Wire protocol, over a Unix socketpair:
- messages are length-prefixed pickles (8-byte big-endian length, then the pickle), both
  ways; parent→child: "buffer" (followed by the memfd as SCM_RIGHTS), "set_known",
  "recognize", "hang" (test hook), "stop"; child→parent: "ready" / "unavailable" once at
  start-up, then one reply per request carrying the request's id, so a late reply to an
  earlier request is never taken for the answer to the current one;
- frames do not go through the socket but through one shared memory file (memfd) that
  both processes map: five 1280×720 frames cost about 1 ms that way against about 50 ms
  pickled through the socket (measured on the CI machine), and the request message stays
  a few hundred bytes, so sending it never blocks on a child that stopped reading.

The child is a plain `python -c` (edge.child.python_command), not multiprocessing.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import mmap
import os
import pickle
import select
import socket
import struct
import sys
import tempfile
import threading
import time
from typing import Mapping, Sequence

import numpy as np

from edge.child import READY as CHILD_READY, STARTING as CHILD_STARTING
from edge.child import Backoff, ChildHealth, ChildNotReady, SupervisedChild, python_command
from edge.clock import SYSTEM_CLOCK, Clock
from services.doorbell import face_library, recognition
from services.doorbell.recognition import VisitorResult

_HEADER = struct.Struct(">Q")
# Bounds a send to a child that stopped reading (messages are small, so in practice a send
# never waits: the socket buffer takes them whole).
_SEND_TIMEOUT_S = 5.0
# start() looks at the lock-protected state this often while the child loads its models.
_START_SLICE_S = 0.1
# Once a message has started to arrive, the rest follows at once unless the child died.
_MESSAGE_GRACE_S = 10.0

NEW, STARTING, READY, UNAVAILABLE, FAILED, STOPPED = (
    "new", "starting", "ready", "unavailable", "failed", "stopped")


class RecognizerUnavailable(RuntimeError):
    """No recognition for this ring: the child is missing its library, dead, hung, still
    loading or stopped. The message is the reason; the doorbell rings on regardless."""


class RecognitionError(RuntimeError):
    """The child is healthy but could not process this request (e.g. malformed frames)."""


class _NoFaceLibrary(Exception):
    """The child's start-up message: it cannot import the face library (the reason says why)."""


# -- framing (both sides) ---------------------------------------------------------------------

def _send(sock: socket.socket, message: dict) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _wait_readable(sock: socket.socket, deadline: float) -> None:
    readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
    if not readable:
        raise TimeoutError


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            _wait_readable(sock, deadline)
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, deadline: float | None = None) -> dict:
    """One message. With a `deadline` (monotonic): TimeoutError if none has started to
    arrive by then, so a timeout never leaves half a message in the stream. EOFError when
    the peer is gone."""
    if deadline is not None:
        _wait_readable(sock, deadline)
        deadline = max(deadline, time.monotonic() + _MESSAGE_GRACE_S)
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    return pickle.loads(_recv_exact(sock, size, deadline))


# -- parent side --------------------------------------------------------------------------------

class _SharedFrames:
    """The parent's side of the shared frame buffer: one memfd (an anonymous file in RAM;
    an unlinked temporary file where memfd_create does not exist), grown when a burst does
    not fit. Nothing is ever left in /dev/shm, even if both processes are killed."""

    def __init__(self):
        self.fd: int | None = None
        self.size = 0
        self._map: mmap.mmap | None = None

    def ensure(self, nbytes: int) -> bool:
        """Make room for `nbytes`; True when a new file was created (the child needs it)."""
        if nbytes <= self.size:
            return False
        self.close()
        size = -(-nbytes // (1 << 20)) * (1 << 20)  # whole MiB, so small changes do not regrow
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("edge-doorbell-frames", os.MFD_CLOEXEC)
        else:
            with tempfile.TemporaryFile() as spare:
                fd = os.dup(spare.fileno())
        try:
            os.ftruncate(fd, size)
            mapped = mmap.mmap(fd, size)
        except OSError:  # out of memory: the next burst tries again, with no file left open
            os.close(fd)
            raise
        self.fd, self.size, self._map = fd, size, mapped
        return True

    def write(self, frames: Sequence[np.ndarray]) -> list[tuple[int, tuple[int, ...]]]:
        """Copy `frames` into the buffer with numpy, which releases the GIL while it copies:
        an mmap slice assignment holds it, and for a burst of 1280×720 frames that kept the
        runtime's other threads (the button's ring among them) waiting for up to 7 ms
        (measured)."""
        layout, offset = [], 0
        for frame in frames:
            np.copyto(np.frombuffer(self._map, np.uint8, frame.size, offset).reshape(frame.shape), frame)
            layout.append((offset, frame.shape))
            offset += frame.nbytes
        return layout

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            os.close(self.fd)
        self.fd, self.size, self._map = None, 0, None


def _check_frames(frames: Sequence[np.ndarray]) -> None:
    for i, frame in enumerate(frames):
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8
                and frame.ndim == 3 and frame.shape[2] == 3):
            raise ValueError(f"frame {i} must be an H×W×3 uint8 RGB array, got "
                             f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}")


class RecognizerProcess:
    """The doorbell's handle on the recognition child process.

    `start()` launches the child and waits until it has loaded the face models (or found it
    cannot); `recognize()` starts it lazily if needed. On a timeout or a dead child the call
    raises RecognizerUnavailable, the child is killed and a new one is launched right away
    without waiting for it (after a growing delay if it keeps failing). A missing face library is not retried until `start()` is called
    again. One request at a time; safe to call from several threads.

    `options` are keyword arguments for recognition.recognize_burst (tolerance,
    min_face_px, ...). `face_library` names the module to import (tests point it at a
    broken one); `test_hooks` lets the child honour the "hang" request. The child's output
    goes to `log`; `clock` drives the restart backoff."""

    def __init__(self, *, options: Mapping[str, object] | None = None, start_timeout_s: float = 60.0,
                 niceness: int = 10, face_library: str = face_library.FACE_LIBRARY,
                 test_hooks: bool = False, python: str = sys.executable, log: logging.Logger | None = None,
                 clock: Clock = SYSTEM_CLOCK):
        self.options = dict(options or {})
        # Fail at construction, not on the first ring, when the config names a bad option.
        inspect.signature(recognition.recognize_burst).bind([], {}, **self.options)
        self.start_timeout_s = start_timeout_s
        self.niceness = niceness
        self.face_library = face_library
        self.test_hooks = test_hooks
        self.python = python
        self._lock = threading.Lock()
        # The first restart is at once, so the next ring finds the models loaded; a child that
        # keeps failing within a minute of its start waits 1 s, then 2 s, ... up to a minute.
        self._child = SupervisedChild("recognizer", log or logging.getLogger("edge.worker.doorbell.recognizer"),
                                      clock=clock, niceness=niceness, backoff=Backoff(max_s=60.0))
        self._sock: socket.socket | None = None
        self._frames = _SharedFrames()
        self._frames_sent = False  # whether the current child has the current buffer
        self._known: dict[str, list[np.ndarray]] = {}
        self._next_id = 0
        self._in_flight: int | None = None
        self._spawned_at = 0.0
        self._state = NEW
        self._reason: str | None = "not started"
        self._stopping = False
        self.restarts = 0
        self.stale_replies = 0

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Launch the child if none is running and wait until it is ready or has failed
        (at most start_timeout_s). Returns `available`; never raises for a broken child.

        The wait for the models (seconds; a minute at worst) is spent outside the lock,
        which is taken only briefly, every 0.1 s, to check the state and read the child's
        message if it is there: recognize(), set_known() and stop() from other threads are
        never queued behind the load."""
        with self._lock:
            self._stopping = False
            if self._state in (NEW, STOPPED, UNAVAILABLE, FAILED) or not self._child.running:
                self._close_child()
                try:
                    self._spawn()
                except OSError as exc:
                    self._state, self._reason = FAILED, f"cannot start the recognizer process: {exc}"
                    return False
        while True:
            with self._lock:
                if self._state != STARTING:
                    return self._state == READY
                sock = self._sock
            try:
                select.select([sock], [], [], _START_SLICE_S)  # unlocked: others get in meanwhile
            except (OSError, ValueError):
                pass  # closed meanwhile by stop() or a failed request: the state says what happened
            with self._lock:
                if self._state == STARTING and self._sock is sock:
                    try:
                        self._wait_ready(time.monotonic())  # reads the message if it is there, or times out
                    except RecognizerUnavailable:
                        pass  # still loading, or failed: the state says which (the loop looks)

    def recognize(self, frames: Sequence[np.ndarray],
                  known: Mapping[str, Sequence[np.ndarray]] | None = None,
                  timeout_s: float = 10.0) -> VisitorResult:
        """Recognize a burst in the child, within `timeout_s`, all waits included (for the
        lock, and for a child still loading its models: then RecognizerUnavailable says
        "starting"). `known` overrides the set given to set_known() for this call. Raises
        RecognizerUnavailable (no answer) or RecognitionError (the child rejected the
        request)."""
        _check_frames(frames)
        deadline = time.monotonic() + timeout_s
        with self._locked(deadline):
            self._ensure_ready(deadline)
            try:
                if self._frames.ensure(max(1, sum(frame.nbytes for frame in frames))):
                    self._frames_sent = False
                if not self._frames_sent:
                    self._send_buffer()
                layout = self._frames.write(frames)
            except OSError as exc:  # no memory for the shared buffer (memfd_create, ftruncate, mmap)
                self._frames.close()
                self._frames_sent = False
                raise RecognizerUnavailable(f"cannot share the frames with the recognizer ({exc})") from exc
            return self._request({"op": "recognize", "frames": layout,
                                  "known": None if known is None else dict(known),
                                  "options": self.options}, deadline, timeout_s)

    def set_known(self, known: Mapping[str, Sequence[np.ndarray]], timeout_s: float = 1.0) -> bool:
        """Replace the enrolled encodings; the running child gets them before its next
        request, a restarted child at start-up. No restart needed. Waits at most
        `timeout_s` for a request in progress; False when it could not (the caller
        tries again later)."""
        copy = {name: [np.asarray(e) for e in encodings] for name, encodings in known.items()}
        try:
            with self._locked(time.monotonic() + timeout_s):
                self._known = copy
                if self._state == READY:
                    self._push_known()
        except RecognizerUnavailable:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the child (for tests and the watchdog); the next call notices and restarts."""
        self._child.kill("killed by the doorbell")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Shut the child down (SIGTERM, then SIGKILL after `timeout_s`) and release
        everything; no process is left behind. A request in progress fails at once, and so
        does a start: a child still loading the models is terminated at once, since it
        cannot read a "stop" request before it has loaded them (dlib takes seconds)."""
        self._stopping = True
        if self._child.state == CHILD_STARTING:
            self._child.stop(timeout_s)  # no lock needed: start() then sees the socket close
        if not self._lock.acquire(timeout=0.5):
            self.kill()  # a request is in progress: end it, its caller gets RecognizerUnavailable
            self._lock.acquire()
        try:
            grace_s = 0.0
            if self._sock is not None and self._child.state == CHILD_READY:
                try:
                    self._post({"op": "stop"})
                    grace_s = timeout_s  # it exits on its own when it reads the request
                except OSError:
                    pass  # already gone: nothing to ask, the stop below reaps it
            self._close_child(timeout_s, exit_grace_s=grace_s)
            self._frames.close()
            self._frames_sent = False
            self._state, self._reason = STOPPED, "stopped"
        finally:
            self._lock.release()

    def simulate_hang(self, timeout_s: float) -> None:
        """Test hook: ask the child to hang, as a native deadlock would. Raises
        RecognizerUnavailable after `timeout_s`, having killed and restarted the child."""
        if not self.test_hooks:
            raise RuntimeError("simulate_hang needs RecognizerProcess(test_hooks=True)")
        deadline = time.monotonic() + timeout_s
        with self._locked(deadline):
            self._ensure_ready(deadline)
            self._request({"op": "hang"}, deadline, timeout_s)

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def child_health(self) -> ChildHealth:
        """The child process as the runtime's helper sees it: pid, starts, last exit (code
        or signal), state and reason; `.as_dict()` for a health report."""
        return self._child.health()

    @property
    def busy(self) -> bool:
        """True while a request is waiting for the child's answer."""
        return self._in_flight is not None

    @property
    def available(self) -> bool:
        """True when a child is ready for a request. Picks up a pending start-up message
        without blocking (skipped while a request is running: the child was ready then)."""
        if self._lock.acquire(blocking=False):
            try:
                if self._state == STARTING:
                    try:
                        self._wait_ready(time.monotonic())
                    except RecognizerUnavailable:
                        pass  # still starting, or failed: the state and reason say which
                elif self._state == READY and not self._child.running:
                    self._fail("recognizer process died while idle", respawn=True)
            finally:
                self._lock.release()
        return self._state == READY

    @property
    def reason(self) -> str | None:
        """Why recognition is not available (None when it is)."""
        return None if self._state == READY else self._reason

    @property
    def state(self) -> str:
        return self._state

    def __enter__(self) -> "RecognizerProcess":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals (called with the lock held) -------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, deadline: float):
        """The lock, waited for until `deadline` at most (RecognizerUnavailable after)."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RecognizerUnavailable(f"recognition unavailable ({self._state}): the recognizer was busy "
                                        f"until the deadline")
        try:
            yield
        finally:
            self._lock.release()

    def _spawn(self) -> None:
        """Launch a child. OSError (out of processes or file descriptors, no such
        interpreter) leaves nothing behind: both ends of the socket are closed."""
        parent_sock, child_sock = socket.socketpair()
        command = python_command(self.python, "services.doorbell.recognizer_child", "main") + [
            "--fd", str(child_sock.fileno()), "--face-library", self.face_library]
        if self.test_hooks:
            command.append("--test-hooks")
        try:
            self._child.start(command, pass_fds=(child_sock.fileno(),))
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self._sock = parent_sock
        self._spawned_at = time.monotonic()
        self._frames_sent = False
        self._state, self._reason = STARTING, "recognizer is starting (loading the face models)"

    def _close_child(self, timeout_s: float = 0.0, exit_grace_s: float = 0.0) -> None:
        """Make sure the child is gone (SIGTERM, SIGKILL after `timeout_s`; see
        SupervisedChild.stop) and waited for, and its socket closed."""
        self._child.stop(timeout_s, exit_grace_s=exit_grace_s)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _fail(self, reason: str, *, respawn: bool) -> RecognizerUnavailable:
        """Kill and reap the child, record why, start a new one unless stopping (or the
        backoff says to wait: then the next request after that time starts it)."""
        ended = self._child.poll()
        if ended is not None:
            reason = f"{reason} ({ended})"
        else:
            self._child.kill(reason)
        self._close_child(timeout_s=1.0)
        self._state, self._reason = FAILED, reason
        if respawn and not self._stopping:
            if not self._child.may_start():
                self._reason = f"{reason}; restarting in {self._child.health().next_start_in_s:.0f} s"
                return RecognizerUnavailable(self._reason)
            self.restarts += 1
            try:
                self._spawn()
                self._reason = f"{reason}; restarting"
            except OSError as exc:  # out of processes or file descriptors: retried next call
                reason = self._reason = f"{reason}; restart failed: {exc}"
        return RecognizerUnavailable(reason)

    def _startup_message(self, timeout_s: float) -> bool:
        """The readiness check for SupervisedChild.wait_ready: reads the child's start-up
        message if it comes within `timeout_s`; True for "ready"."""
        try:
            message = _recv(self._sock, time.monotonic() + timeout_s)
        except TimeoutError:
            return False
        if message.get("op") == "unavailable":
            raise _NoFaceLibrary(message["reason"])
        return True

    def _wait_ready(self, deadline: float) -> None:
        """Consume the child's start-up message; raises RecognizerUnavailable if it is not
        ready by `deadline` (it keeps loading unless start_timeout_s has passed too)."""
        if self._state != STARTING:
            if self._state != READY:
                raise RecognizerUnavailable(self._reason or "recognizer is not running")
            return
        hard_deadline = self._spawned_at + self.start_timeout_s
        try:
            self._child.wait_ready(min(deadline, hard_deadline) - time.monotonic(), check=self._startup_message)
        except ChildNotReady as exc:
            if exc.exit is not None:
                raise self._fail("recognizer process exited during start-up", respawn=False) from None
            if time.monotonic() >= hard_deadline:
                raise self._fail(f"recognizer did not start within {self.start_timeout_s:.0f} s",
                                 respawn=False) from None
            raise RecognizerUnavailable(f"recognition unavailable (starting): {self._reason}") from None
        except (EOFError, OSError):
            raise self._fail("recognizer process exited during start-up", respawn=False) from None
        except _NoFaceLibrary as exc:
            self._close_child(timeout_s=5.0)
            self._state, self._reason = UNAVAILABLE, str(exc)
            raise RecognizerUnavailable(self._reason) from None
        except Exception as exc:  # an unreadable start-up message: the child is broken
            raise self._fail(f"recognizer sent an unreadable start-up message ({type(exc).__name__}: {exc})",
                             respawn=False) from None
        self._state, self._reason = READY, None
        if self._known:
            self._push_known()
            if self._state != READY:
                raise RecognizerUnavailable(self._reason)

    def _ensure_ready(self, deadline: float) -> None:
        if self._state == STOPPED:
            raise RecognizerUnavailable("recognizer is stopped; call start()")
        if self._state == UNAVAILABLE:
            raise RecognizerUnavailable(self._reason)
        if self._state == READY and not self._child.running:
            self._fail("recognizer process died while idle", respawn=True)  # restarts it, or says when
        if self._state == FAILED and not self._child.may_start():
            raise RecognizerUnavailable(self._reason)
        if self._state in (NEW, FAILED):
            self._close_child()
            try:
                self._spawn()
            except OSError as exc:  # out of processes or file descriptors: tried again next ring
                self._state, self._reason = FAILED, f"cannot start the recognizer process: {exc}"
                raise RecognizerUnavailable(self._reason) from exc
        self._wait_ready(deadline)

    def _post(self, message: dict) -> None:
        self._sock.settimeout(_SEND_TIMEOUT_S)
        _send(self._sock, message)

    def _push_known(self) -> None:
        try:
            self._post({"op": "set_known", "known": self._known})
        except OSError as exc:
            # The child died: the next request notices and the new child gets the set at start.
            self._fail(f"recognizer process is gone ({exc})", respawn=True)

    def _send_buffer(self) -> None:
        try:
            self._post({"op": "buffer", "size": self._frames.size})
            socket.send_fds(self._sock, [b"F"], [self._frames.fd])
        except OSError as exc:
            raise self._fail(f"recognizer process is gone ({exc})", respawn=True) from exc
        self._frames_sent = True

    def _request(self, message: dict, deadline: float, timeout_s: float):
        self._next_id += 1
        request_id = message["id"] = self._next_id
        self._in_flight = request_id
        try:
            try:
                self._post(message)
            except OSError as exc:
                raise self._fail(f"recognizer process died before it took the request ({exc})", respawn=True) from exc
            while True:
                try:
                    reply = _recv(self._sock, deadline)
                except TimeoutError:
                    raise self._fail(f"recognizer did not answer within {timeout_s:.1f} s and was killed",
                                     respawn=True) from None
                except (EOFError, OSError):
                    raise self._fail("recognizer process died", respawn=True) from None
                except Exception as exc:  # pickle.UnpicklingError and friends: a corrupt stream
                    raise self._fail(f"recognizer sent an unreadable reply ({type(exc).__name__}: {exc}) and "
                                     f"was restarted", respawn=True) from None
                if reply.get("id") != request_id:
                    self.stale_replies += 1
                    continue
                if reply["ok"]:
                    return reply.get("result")
                raise RecognitionError(reply["error"])
        finally:
            self._in_flight = None


# -- child side --------------------------------------------------------------------------------

def _recognize(request: dict, buffer: mmap.mmap | None, known: dict) -> dict:
    """Run one recognize request against the frames in the shared buffer."""
    try:
        if buffer is None:
            raise ValueError("no frame buffer was shared before the request")
        frames = [np.frombuffer(buffer, np.uint8, int(np.prod(shape)), offset).reshape(shape)
                  for offset, shape in request["frames"]]
        result = recognition.recognize_burst(
            frames, known if request["known"] is None else request["known"], **request["options"])
        return {"id": request["id"], "ok": True, "result": result}
    except (ValueError, TypeError, RuntimeError) as exc:
        # A request this child cannot process (dlib raises RuntimeError for images it
        # rejects): answer with the error and stay up for the next ring.
        return {"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _serve(sock: socket.socket, test_hooks: bool) -> None:
    """Answer requests until "stop" or until the parent goes away (EOF)."""
    known: dict[str, list[np.ndarray]] = {}
    buffer: mmap.mmap | None = None
    while True:
        try:
            request = _recv(sock)
        except EOFError:
            return
        op = request["op"]
        if op == "stop":
            return
        if op == "buffer":
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
            buffer = mmap.mmap(fds[0], request["size"])
            os.close(fds[0])
        elif op == "set_known":
            known = request["known"]
        elif op == "recognize":
            _send(sock, _recognize(request, buffer, known))
        elif op == "hang" and test_hooks:
            threading.Event().wait()  # never set: stuck like a deadlocked native call
        else:
            _send(sock, {"id": request.get("id"), "ok": False, "error": f"unknown request {op!r}"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Face recognition child of the doorbell worker")
    parser.add_argument("--fd", type=int, required=True, help="socket inherited from the parent")
    parser.add_argument("--face-library", default=face_library.FACE_LIBRARY)
    parser.add_argument("--test-hooks", action="store_true")
    args = parser.parse_args(argv)
    # Already at lower priority (edge.child), so even loading the models yields the CPU to
    # the button path.
    with socket.socket(fileno=args.fd) as sock:
        try:
            face_library.load_face_library(args.face_library)
        except face_library.RecognitionUnavailable as exc:
            _send(sock, {"op": "unavailable", "reason": str(exc)})
            return 0
        _send(sock, {"op": "ready", "pid": os.getpid()})
        _serve(sock, args.test_hooks)
    return 0
