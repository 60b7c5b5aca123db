"""Turning photos into enrolled encodings: the one face of a photo, encoded as it is and as
an infrared night camera would see it (`enrollment_encodings`).

Two callers:
- `edge faces enroll` (a short-lived CLI process): `encode_photo` loads dlib in-process,
  which is fine there.
- "this was Alice" from Home Assistant (`enroll_last_visitor`): the runtime must not load
  dlib (native code stays in child processes), so `EnrollmentChild` encodes the
  visitor's face from the last snapshot in a one-shot child (edge.child) at low CPU
  priority, with a timeout, killed if it overruns.

Encodings travel between the processes as raw bytes on a socket, never through a log.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import socket
import sys
import time
from pathlib import Path

import numpy as np

from edge.child import SupervisedChild, python_command
from hardware.camera import load_rgb
from hardware.images import to_gray
from services.doorbell.faces_store import ENCODING_SIZE
from services.doorbell.face_library import RecognitionUnavailable
from services.doorbell.recognition import (DEFAULT_MIN_FACE_PX, DEFAULT_MODEL, Box, EnrollmentError, detect_faces,
                                           encode_faces)

# The encoder exits as soon as it has sent its reply; this bounds a wait for that.
_EXIT_GRACE_S = 5.0


def photo_source(path: Path) -> str:
    """Identifies a photo by content, so enrolling the same photo twice is a no-op."""
    return "photo:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def single_face_box(image: np.ndarray, *, label: str = "the photo",
                    min_face_px: int = DEFAULT_MIN_FACE_PX) -> Box:
    """The box of the one face in an enrollment photo. Raises EnrollmentError when the
    photo shows no face or several (`label` names the photo in the message)."""
    boxes = detect_faces(image, min_face_px=min_face_px, max_faces=None)
    if not boxes:
        raise EnrollmentError(
            f"no face found in {label}: use a sharp, well-lit photo of the person looking at "
            f"the camera, with the face at least {min_face_px} px high")
    if len(boxes) > 1:
        raise EnrollmentError(f"{len(boxes)} faces found in {label}; use a photo with exactly one face")
    return boxes[0]


def encode_single_face(image: np.ndarray, *, label: str = "the photo",
                       min_face_px: int = DEFAULT_MIN_FACE_PX, model: str = DEFAULT_MODEL) -> np.ndarray:
    """The encoding of the one face in a photo (EnrollmentError as single_face_box)."""
    return encode_faces(image, [single_face_box(image, label=label, min_face_px=min_face_px)], model=model)[0]


def night_copy(image: np.ndarray) -> np.ndarray:
    """The image as a camera in infrared night mode sees it: one grey level in all three
    channels."""
    gray = to_gray(image)
    return np.ascontiguousarray(np.stack([gray, gray, gray], axis=-1))


def enrollment_encodings(image: np.ndarray, box: Box, *, model: str = DEFAULT_MODEL) -> list[np.ndarray]:
    """What to enroll for the face at `box`: its encoding, and for a colour photo also the
    encoding of its night copy.

    Doorbell cameras switch to infrared at night and send monochrome frames, which dlib's
    encoder places farther from a colour photo of the same face. Enrolling both ways
    brought the dev set's hardest genuine distance (an IR-night copy) from 0.607 to 0.582
    and the mean from 0.402 to 0.391, with the nearest impostor unchanged at 0.708
    (tests/bench/bench_recognition.py); ten jittered encodings or a second, upsampled
    detection box moved the impostors closer as much as the genuine faces. One more
    encoding per photo, paid once, offline."""
    encodings = encode_faces(image, [box], model=model)
    if image.ndim == 3 and image.shape[2] >= 3 and not (
            np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])):
        encodings += encode_faces(night_copy(image), [box], model=model)
    return encodings


def enroll_single_face(image: np.ndarray, *, label: str = "the photo", min_face_px: int = DEFAULT_MIN_FACE_PX,
                       model: str = DEFAULT_MODEL) -> list[np.ndarray]:
    """enrollment_encodings of the one face in an enrollment photo (EnrollmentError as
    single_face_box)."""
    return enrollment_encodings(image, single_face_box(image, label=label, min_face_px=min_face_px), model=model)


def encode_photo(path: Path, *, min_face_px: int) -> list[np.ndarray]:
    """The enrollment encodings of the one face in the photo at `path` (recognition.
    enrollment_encodings); EnrollmentError (no face, two faces, unreadable file) says why not."""
    try:
        image = load_rgb(path)
    except OSError as exc:
        raise EnrollmentError(f"cannot read {path.name} as an image ({exc}); use a JPEG or PNG photo") from None
    return enroll_single_face(image, label=path.name, min_face_px=min_face_px)


class EnrollmentChild:
    """One face's enrollment encodings in a child process (through edge.child, at lower
    CPU and IO priority, its output in `log`); `kill()` from another thread ends it.

    The request (frame and box) and the reply (a pickled dict: "encodings", a list of
    bytes, or why not) travel over a socketpair, each ended by closing the writing side."""

    def __init__(self, python: str = sys.executable, niceness: int = 10, log: logging.Logger | None = None):
        self.python = python
        self.niceness = niceness
        self._child = SupervisedChild("face-encoder", log or logging.getLogger("edge.worker.doorbell.encoder"),
                                      niceness=niceness)
        self._killed = False

    def encode(self, frame: np.ndarray, box: tuple[int, int, int, int],
               timeout_s: float = 60.0) -> list[np.ndarray]:
        """The enrollment encodings of the face at `box` in `frame`. Raises EnrollmentError when the
        child finds no face there, RuntimeError when it fails or overruns."""
        request = pickle.dumps({"frame": np.ascontiguousarray(frame), "box": tuple(int(v) for v in box)})
        deadline = time.monotonic() + timeout_s
        ours, theirs = socket.socketpair()
        with ours:
            try:
                self._child.start(python_command(self.python, "services.doorbell.enrollment", "_child_main")
                                  + ["--fd", str(theirs.fileno())], pass_fds=(theirs.fileno(),))
            except OSError as exc:  # out of processes or file descriptors, no such interpreter
                raise RuntimeError(f"cannot start the face encoder: {exc}") from exc
            finally:
                theirs.close()
            if self._killed:
                self._child.kill("stopped")
            try:
                reply = _exchange(ours, request, deadline)
            except TimeoutError:
                self._child.stop(timeout_s=1.0)
                raise RuntimeError(f"encoding the face did not finish within {timeout_s:.0f} s and was stopped") from None
            except OSError:
                reply = b""  # the child died mid-request (killed, crashed): its exit says why
        ended = self._child.wait(_EXIT_GRACE_S) or self._child.stop(timeout_s=1.0)
        if ended.returncode != 0 or not reply:
            last_line = self._child.health().last_stderr
            reason = "stopped" if self._killed else f"{ended}" + (f": {last_line}" if last_line else "")
            raise RuntimeError(f"the face encoder failed ({reason})")
        answer = pickle.loads(reply)
        if "rejected" in answer:
            raise EnrollmentError(answer["rejected"])
        encodings = [np.frombuffer(raw, dtype="<f8").copy() for raw in answer.get("encodings", [])]
        if not encodings or any(len(encoding) != ENCODING_SIZE for encoding in encodings):
            raise RuntimeError(f"the face encoder failed ({answer.get('error') or 'no encoding in its reply'})")
        return encodings

    def kill(self) -> None:
        self._killed = True
        self._child.kill("stopped by the doorbell")


def _exchange(sock: socket.socket, request: bytes, deadline: float) -> bytes:
    """Send the whole request, then read the whole reply, by `deadline` (TimeoutError)."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))  # for the whole sendall (Python >= 3.5)
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
    return _read_to_end(sock, deadline)


def _read_to_end(sock: socket.socket, deadline: float | None = None) -> bytes:
    chunks = []
    while True:
        if deadline is not None:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _child_main() -> int:
    parser = argparse.ArgumentParser(description="One-shot face encoder child of the doorbell worker")
    parser.add_argument("--fd", type=int, required=True, help="socket inherited from the parent")
    args = parser.parse_args()
    with socket.socket(fileno=args.fd) as sock:
        request = pickle.loads(_read_to_end(sock))
        try:
            encodings = enrollment_encodings(request["frame"], request["box"])
        except RecognitionUnavailable as exc:
            reply = {"error": str(exc)}
        except RuntimeError as exc:  # dlib rejects the image
            reply = {"rejected": f"the face could not be encoded: {exc}"}
        else:
            reply = ({"encodings": [np.asarray(e, dtype="<f8").tobytes() for e in encodings]} if encodings else
                     {"rejected": "no face could be encoded at the visitor's position in the snapshot"})
        sock.sendall(pickle.dumps(reply))
    return 0
