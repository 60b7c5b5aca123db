"""Naming a face: compare its encoding with the enrolled people's (`match`), and decide
over the frames of a burst what to announce (`vote`). Pure functions over numpy arrays; no
I/O and no logging (encodings are biometric data).

Not responsible for: finding or encoding faces (recognition.py).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

KNOWN, UNKNOWN, UNCERTAIN = "known", "unknown", "uncertain"

# dlib's operating point for its face encoder: "When using a distance threshold of 0.6, the
# dlib model obtains an accuracy of 99.38% on the standard LFW face recognition benchmark"
# (dlib examples/dnn_face_recognition_ex.cpp); face_recognition's default too.
DEFAULT_TOLERANCE = 0.6
# Distances in [tolerance - margin, tolerance) are "uncertain": never announced as a name.
DEFAULT_UNCERTAIN_MARGIN = 0.05
# Minimum number of frames that must name the same person before it is announced.
DEFAULT_MIN_VOTES = 2


@dataclass(frozen=True)
class Match:
    """How one face encoding compares with the enrolled people.

    `name` is set only when status is "known". `candidate` is the nearest enrolled person
    whatever the status (for votes and diagnostics, never to announce). `distance` is the
    distance to the candidate (None when nobody is enrolled). `confidence` (0..1) is how sure
    we are of the status: of the name when known/uncertain, of "not enrolled" when unknown."""

    name: str | None
    status: str
    distance: float | None
    confidence: float
    candidate: str | None = None


def distance_to_confidence(distance: float, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Map a face distance to a 0..1 match score that is 0.5 at the tolerance and rises
    steeply below it. The mapping proposed by face_recognition's author (wiki page
    "Calculating Accuracy as a Percentage", A. Geitgey, 2019)."""
    if distance > tolerance:
        return max(0.0, (1.0 - distance) / ((1.0 - tolerance) * 2.0))
    linear = 1.0 - distance / (tolerance * 2.0)
    return min(1.0, linear + (1.0 - linear) * math.pow((linear - 0.5) * 2.0, 0.2))


def match(encoding: np.ndarray, known: Mapping[str, Sequence[np.ndarray]], *,
          tolerance: float = DEFAULT_TOLERANCE,
          uncertain_margin: float = DEFAULT_UNCERTAIN_MARGIN) -> Match:
    """Compare one encoding with every enrolled person (each may have several encodings).

    known: distance < tolerance - margin. uncertain: distance in the margin just under the
    tolerance, or a second enrolled person is within the margin of the best one (two
    lookalikes: naming either would be a guess). unknown: nobody within the tolerance."""
    best: list[tuple[float, str]] = []
    for name, encodings in known.items():
        if len(encodings):
            distances = np.linalg.norm(np.asarray(encodings, dtype=np.float64) - encoding, axis=1)
            best.append((float(distances.min()), name))
    if not best:
        return Match(None, UNKNOWN, None, 1.0)
    best.sort()
    distance, name = best[0]
    if distance >= tolerance:
        return Match(None, UNKNOWN, distance, 1.0 - distance_to_confidence(distance, tolerance), name)
    confidence = distance_to_confidence(distance, tolerance)
    runner_up = best[1][0] if len(best) > 1 else math.inf
    if distance >= tolerance - uncertain_margin or runner_up - distance < uncertain_margin:
        return Match(None, UNCERTAIN, distance, confidence, name)
    return Match(name, KNOWN, distance, confidence, name)


def vote(per_frame_matches: Sequence[Match], *, min_votes: int = DEFAULT_MIN_VOTES,
         burst_frames: int | None = None) -> Match:
    """Combine one face's matches over the frames of a burst into one verdict.

    `burst_frames` is how many frames the burst had (default: one per match). A face is
    often matched in fewer of them (not found, or not encoded), and those frames still
    count: a name is announced only when it is "known" (not merely uncertain) in at least
    `min_votes` frames, or in a majority of the burst when it is shorter than that (one
    frame of one, two of two), and in more frames than any other name. Anything else
    with a known or uncertain frame is "uncertain"; otherwise "unknown". So one
    borderline frame, or the one frame of five where the face was tracked, never
    announces a name; a single photo (a burst of one) still can."""
    if not per_frame_matches:
        raise ValueError("vote needs at least one frame's match")
    frames = len(per_frame_matches) if burst_frames is None else burst_frames
    if frames < len(per_frame_matches):
        raise ValueError(f"{len(per_frame_matches)} matches cannot come from a burst of {frames} frames")
    known_votes = Counter(m.name for m in per_frame_matches if m.status == KNOWN)
    ranked = known_votes.most_common(2)
    needed = min(min_votes, frames // 2 + 1)
    if ranked and ranked[0][1] >= needed and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        name, _ = ranked[0]
        distances = [m.distance for m in per_frame_matches if m.status == KNOWN and m.name == name]
        distance = float(np.median(distances))
        confidence = float(np.median([m.confidence for m in per_frame_matches
                                      if m.status == KNOWN and m.name == name]))
        return Match(name, KNOWN, distance, confidence, name)
    hesitant = [m for m in per_frame_matches if m.status in (KNOWN, UNCERTAIN)]
    pool, status = (hesitant, UNCERTAIN) if hesitant else (list(per_frame_matches), UNKNOWN)
    candidate = Counter(m.candidate for m in pool).most_common(1)[0][0]
    distances = [m.distance for m in pool if m.candidate == candidate and m.distance is not None]
    distance = float(np.median(distances)) if distances else None
    confidence = float(np.median([m.confidence for m in pool if m.candidate == candidate]))
    return Match(None, status, distance, confidence, candidate)
