"""What a ring's answer says about the visitor: the `doorbell.visitor` event's payload (its
result, the label the "Last visitor" sensor shows, the faces), the retained "Last visitor"
state, and the press and last-visitor records the worker keeps on the way.

Pure data and functions: no I/O, no clock, no threads, so every outcome can be read (and
tested) in one place.

Not responsible for: taking the burst or recognizing faces (worker.py, recognizer_child.py),
saving the snapshot (snapshots.py), publishing anything (the worker emits; edge/mqtt sends).

Privacy: names appear only for known people; unknown faces carry no name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from services.doorbell.matching import KNOWN, UNCERTAIN, UNKNOWN
from services.doorbell.recognition import VisitorResult

# Results of a ring's visitor event, and the "Last visitor" sensor's text for each.
FACES, NO_FACE, CAMERA_UNAVAILABLE, CAMERA_OFF = "faces", "no_face", "camera_unavailable", "camera_off"
RECOGNITION_UNAVAILABLE, RECOGNITION_OFF, SAFE_MODE = "recognition_unavailable", "recognition_off", "safe_mode"
ERROR = "error"  # an unexpected failure while answering the ring (the reason says which step)
LABELS = {NO_FACE: "no face", CAMERA_UNAVAILABLE: "camera unavailable", CAMERA_OFF: "no camera",
          RECOGNITION_UNAVAILABLE: "recognition unavailable", RECOGNITION_OFF: "recognition off",
          SAFE_MODE: "safe mode", ERROR: "error"}
UNKNOWN_LABEL, UNCERTAIN_LABEL = "unknown person", "uncertain"
# The Visitor event entity's types: the largest face's status when faces were found, else the
# outcome. An automation triggers on `known` every time, even for the same person twice.
VISITOR_EVENT_TYPES = (KNOWN, UNKNOWN, UNCERTAIN, NO_FACE, CAMERA_UNAVAILABLE, CAMERA_OFF, RECOGNITION_UNAVAILABLE,
                       RECOGNITION_OFF, SAFE_MODE, ERROR)


@dataclass
class Press:
    """A ring waiting for the worker's thread to answer it."""
    event_id: str
    ts_wall: float
    ts_mono: float
    coalesced: list[str] = field(default_factory=list)  # earlier rings this one stands for


@dataclass(frozen=True)
class LastVisitor:
    """The last ring's chosen frame, kept in memory for "this was Alice"."""
    event_id: str
    frame: np.ndarray
    faces: tuple  # FaceResult, largest first


def iso(ts_wall: float) -> str:
    return datetime.fromtimestamp(ts_wall, timezone.utc).isoformat(timespec="seconds")


def face_label(face) -> str:
    if face.status == KNOWN and face.name:
        return face.name
    return UNCERTAIN_LABEL if face.status == UNCERTAIN else UNKNOWN_LABEL


def visitor_event(press: Press, frames: list, result: VisitorResult | None, *, camera_problem: str | None,
                  recognition_problem: str | None, recognition_ms: float | None, error: str | None,
                  safe_mode: bool, camera_off: bool, recognition_off: bool) -> dict:
    """The visitor event of one ring. `error` (a step of answering that broke) wins over
    everything; otherwise the first reason there is no recognition result names the outcome
    (safe mode, no camera configured, no frames, recognition off or unavailable)."""
    faces = [] if result is None else [
        {"name": f.name if f.status == KNOWN else None, "status": f.status, "confidence": f.confidence,
         "box": list(f.box)} for f in result.faces]
    if error is not None:
        outcome = ERROR
    elif safe_mode:
        outcome = SAFE_MODE
    elif camera_off:
        outcome = CAMERA_OFF
    elif not frames:
        outcome = CAMERA_UNAVAILABLE
    elif recognition_off:
        outcome = RECOGNITION_OFF
    elif result is None:
        outcome = RECOGNITION_UNAVAILABLE
    else:
        outcome = FACES if faces else NO_FACE
    largest = result.faces[0] if result is not None and result.faces else None
    return {
        "event_type": largest.status if largest is not None else outcome,
        "result": outcome,
        "names": [f["name"] for f in faces if f["name"]],
        "visitor": face_label(largest) if largest is not None else LABELS[outcome],
        "confidence": largest.confidence if largest is not None else None,
        "faces": faces,
        "frames": len(frames),
        "reason": error or recognition_problem or camera_problem,
        "recognition_ms": recognition_ms,
        "coalesced": press.coalesced,
        "time": iso(press.ts_wall),
        "snapshot": None,
    }


def error_visitor(press: Press, frames: int, reason: str) -> dict:
    """The visitor event when even building the normal one failed."""
    return {"event_type": ERROR, "result": ERROR, "names": [], "visitor": LABELS[ERROR], "confidence": None,
            "faces": [], "frames": frames,
            "reason": reason, "recognition_ms": None, "coalesced": press.coalesced,
            "time": iso(press.ts_wall), "snapshot": None}


def last_visitor_state(press: Press, visitor: dict) -> dict:
    """The retained "Last visitor" state (the sensor's value and attributes)."""
    return {"visitor": visitor["visitor"], "confidence": visitor["confidence"], "time": iso(press.ts_wall),
            "event_id": press.event_id, "result": visitor["result"], "faces": visitor["faces"]}


def without_removed(state: dict | None, known: dict) -> dict | None:
    """The "Last visitor" state with the people no longer in `known` (`edge faces remove
    NAME`) turned into unknown faces, and relabelled "unknown person" when the largest face
    was one of them; None when the state names nobody removed."""
    if not state or not any(f.get("name") and f["name"] not in known for f in state.get("faces", ())):
        return None
    faces = [dict(f, name=None, status=UNKNOWN) if f.get("name") and f["name"] not in known else f
             for f in state["faces"]]
    relabelled = faces[0] is not state["faces"][0]
    return {**state, "faces": faces,
            "visitor": UNKNOWN_LABEL if relabelled else state.get("visitor"),
            "confidence": None if relabelled else state.get("confidence")}
