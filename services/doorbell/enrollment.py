"""Turning photos into enrolled encodings.

Two callers:
- `edge faces enroll` (a short-lived CLI process): `encode_photo` loads dlib in-process,
  which is fine there.
- "this was Alice" from Home Assistant (`enroll_last_visitor`): the runtime must not load
  dlib (native code stays in child processes), so `encode_face_in_child` encodes the
  visitor's face from the last snapshot in a one-shot child at low CPU priority, with a
  timeout, killed if it overruns.

Encodings travel between the processes as raw bytes on a pipe, never through a log.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

from hardware.camera import load_rgb
from services.doorbell.child_command import child_command
from services.doorbell.faces_store import ENCODING_SIZE
from services.doorbell.recognition import (EnrollmentError, RecognitionUnavailable, encode_faces,
                                           encode_single_face)

EXIT_REJECTED = 3


def photo_source(path: Path) -> str:
    """Identifies a photo by content, so enrolling the same photo twice is a no-op."""
    return "photo:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def encode_photo(path: Path, *, min_face_px: int) -> np.ndarray:
    """The encoding of the one face in the photo at `path`; EnrollmentError (no face, two
    faces, unreadable file) says why not."""
    try:
        image = load_rgb(path)
    except OSError as exc:
        raise EnrollmentError(f"cannot read {path.name} as an image ({exc}); use a JPEG or PNG photo") from None
    return encode_single_face(image, label=path.name, min_face_px=min_face_px)


class EnrollmentChild:
    """One encoding in a child process; `kill()` from another thread ends it."""

    def __init__(self, python: str = sys.executable, niceness: int = 10):
        self.python = python
        self.niceness = niceness
        self._proc: subprocess.Popen | None = None
        self._killed = False

    def encode(self, frame: np.ndarray, box: tuple[int, int, int, int], timeout_s: float = 60.0) -> np.ndarray:
        """The encoding of the face at `box` in `frame`. Raises EnrollmentError when the
        child finds no face there, RuntimeError when it fails or overruns."""
        request = pickle.dumps({"frame": np.ascontiguousarray(frame), "box": tuple(int(v) for v in box),
                                "nice": self.niceness})
        self._proc = subprocess.Popen(child_command(self.python, "services.doorbell.enrollment", "_child_main"),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True)
        if self._killed:
            self._proc.kill()
        try:
            out, err = self._proc.communicate(request, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise RuntimeError(f"encoding the face did not finish within {timeout_s:.0f} s and was stopped") from None
        code = self._proc.returncode
        if code == EXIT_REJECTED:
            raise EnrollmentError(err.decode(errors="replace").strip())
        if code != 0 or len(out) != ENCODING_SIZE * 8:
            reason = "stopped" if self._killed else f"exit code {code}: {err.decode(errors='replace').strip()[-300:]}"
            raise RuntimeError(f"the face encoder failed ({reason})")
        return np.frombuffer(out, dtype="<f8").copy()

    def kill(self) -> None:
        self._killed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


def _child_main() -> int:
    request = pickle.loads(sys.stdin.buffer.read())
    os.nice(request["nice"])
    try:
        encodings = encode_faces(request["frame"], [request["box"]])
    except RecognitionUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    except RuntimeError as exc:  # dlib rejects the image
        print(f"the face could not be encoded: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    if not encodings:
        print("no face could be encoded at the visitor's position in the snapshot", file=sys.stderr)
        return EXIT_REJECTED
    sys.stdout.buffer.write(np.asarray(encodings[0], dtype="<f8").tobytes())
    return 0
