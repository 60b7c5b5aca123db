# About 510 lines, one file on purpose: the burst logic runs the detection passes piece by
# piece (the first pass, the companion scan beside the encoder, following faces into other
# frames), so apart they would only make each other's helpers public.
"""Face recognition for the doorbell: find the faces in a burst of camera frames, name them
against the enrolled encodings, and decide by vote over the burst what to announce.

Pure functions and small value classes over numpy RGB arrays (H×W×3 uint8), built on dlib's
HOG face detector, 5-point landmarks and ResNet face encoder (through dlib_faces.py, which
loads only those models; face_recognition's own import loads 100 MB more).
No I/O, no logging: encodings are biometric data and must not end up in logs.

Naming the faces found (distances, the uncertain band, votes over a burst) is matching.py's.

Not responsible for: running the native library safely (recognizer_child.py runs this
module in a killable child process; face_library.py loads it), storing known faces, cameras.

Boxes follow face_recognition's order: (top, right, bottom, left) in frame pixels.

Speed without losing accuracy (measured by tests/bench/bench_recognition.py):
- dlib's HOG detector scans 80×80 windows over an image pyramid, so it finds faces of
  about 80 px and larger (dlib examples/fhog_object_detector_ex.cpp trains it with
  `set_detection_window_size(80, 80)`). The naive call upsamples the whole frame 2× to
  find 40 px faces: 4× the pixels to scan. We scan a copy scaled to about 320×180 first
  (a visitor at the door fills a good part of the frame), then about 640×360 when that
  finds nothing; a finer pass follows only when that finds nothing either (small faces,
  down to `min_face_px`) or finds a face small enough that a companion half its size
  could have been missed. The look for small faces scans two overlapping halves of the
  frame in two threads (_finer_boxes).
- dlib's HOG detector releases the GIL, and so do the encoder's matrix products, so the
  companion scan runs in a second thread while the faces already found are being encoded;
  a face both passes found keeps the encoding already made. Nothing else runs in parallel.
- Detection runs on grayscale: dlib's HOG on RGB takes the strongest gradient of the three
  channels, on gray it computes one; about 25 % faster at the same detections (measured).
- In a burst, only the snapshot frame gets the finer passes; its faces are followed into
  the other frames by overlap or by scanning just the region around them.
- Landmarks and encodings are computed on the full-resolution colour frame, as before.
  The encoder is dlib's ResNet run on numpy's BLAS (face_net.py): about 15 ms per face on
  x86 where dlib-bin's own forward pass takes about 90 ms, with the same encodings to
  float rounding. Only the largest faces in the best frames are encoded.
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from hardware.images import resize, sharpness, to_gray
from services.doorbell.face_library import face_library
from services.doorbell.matching import (DEFAULT_MIN_VOTES, DEFAULT_TOLERANCE, DEFAULT_UNCERTAIN_MARGIN, KNOWN,
                                        UNKNOWN, Match, match, vote)

Box = tuple[int, int, int, int]

HOG_WINDOW_PX = 80
# The coarse pass scans about 320×180 pixels (a 1280×720 frame at quarter size: faces from
# about 320 px up); the fast pass, when that finds nothing, about 640×360 (half size).
COARSE_PASS_PIXELS = 320 * 180
FAST_PASS_PIXELS = 640 * 360
# Faces at least this fraction of the largest face's height are always looked for.
COMPANION_FACE_RATIO = 0.5
# A visitor a few metres from a 1280×720 doorbell camera shows a 60–80 px face.
DEFAULT_MIN_FACE_PX = 60
# Encoding costs a ResNet forward pass per face (about 15 ms on x86, face_net.py; more on a
# Pi), so only the largest faces are encoded.
DEFAULT_MAX_FACES = 4
# "small" = 5-point landmarks, the alignment dlib's own face-recognition example uses with
# this encoder (dlib examples/dnn_face_recognition_ex.cpp). On our photos it keeps accuracy
# with wider margins than "large" (bench --compare-models) and fits in 0.6 ms, not 2.3 ms.
DEFAULT_MODEL = "small"
# Encode faces in at most this many frames of a burst (best first): two agreeing frames are
# what the vote needs, a third one breaks a tie, more only cost another encoding each.
DEFAULT_MAX_ENCODED_FRAMES = 3

_CORES = len(os.sched_getaffinity(0))
_CUT_MARGIN_PX = 8  # one HOG cell: a box this close to where a half was cut touches the cut
class EnrollmentError(ValueError):
    """An enrollment photo cannot be used; the message says why and what photo to use."""


@dataclass(frozen=True)
class FaceResult:
    """One visitor's face: the burst's verdict and where the face is in the chosen frame.
    `votes` is how many frames named `name`, `frames` how many frames saw this face."""

    name: str | None
    status: str
    confidence: float
    box: Box
    distance: float | None = None
    votes: int = 0
    frames: int = 0


@dataclass(frozen=True)
class VisitorResult:
    """What a burst showed: faces largest first, the index of the frame chosen as the
    snapshot (None for an empty burst) and timings in milliseconds."""

    faces: tuple[FaceResult, ...]
    frame_index: int | None
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Names to announce, largest face first."""
        return [face.name for face in self.faces if face.status == KNOWN and face.name]


# -- detection and encoding -----------------------------------------------------------------

def box_area(box: Box) -> int:
    top, right, bottom, left = box
    return max(0, bottom - top) * max(0, right - left)


def _iou(a: Box, b: Box) -> float:
    top, right = max(a[0], b[0]), min(a[1], b[1])
    bottom, left = min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, bottom - top) * max(0, right - left)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union else 0.0


def _scaled(gray: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return gray
    h, w = gray.shape
    return resize(gray, max(1, round(w * scale)), max(1, round(h * scale)))


def _to_frame(found: Sequence[Box], scale: float, shape: tuple[int, ...]) -> list[Box]:
    """Boxes found in a copy of a frame of `shape` resized by `scale`, in the frame's coordinates."""
    h, w = shape[:2]
    return [(max(0, round(top / scale)), min(w, round(right / scale)),
             min(h, round(bottom / scale)), max(0, round(left / scale)))
            for top, right, bottom, left in found]


def _detect(scaled: np.ndarray, scale: float, shape: tuple[int, ...]) -> list[Box]:
    """dlib HOG detections on `scaled` (a copy of a frame of `shape` resized by `scale`), in
    the frame's coordinates."""
    return _to_frame(face_library().face_locations(scaled, number_of_times_to_upsample=0, model="hog"),
                     scale, shape)


def _hog_boxes(gray: np.ndarray, scale: float) -> list[Box]:
    """dlib HOG detections on `gray` resized by `scale`, in `gray`'s coordinates."""
    return _detect(_scaled(gray, scale), scale, gray.shape)


def _first_pass(gray: np.ndarray, min_face_px: int, coarse_pass_pixels: int,
                fast_pass_pixels: int) -> tuple[list[Box], float]:
    """The coarse pass, then the fast pass if the coarse one found nothing: (boxes, the
    scale that found them, or the fast scale when neither did)."""
    fast = _pass_scale(gray, min_face_px, fast_pass_pixels)
    coarse = min(fast, _pass_scale(gray, min_face_px, coarse_pass_pixels))
    if coarse < fast:
        boxes = _hog_boxes(gray, coarse)
        if boxes:
            return boxes, coarse
    return _hog_boxes(gray, fast), fast


def _pass_scale(gray: np.ndarray, min_face_px: int, fast_pass_pixels: int) -> float:
    if min_face_px <= 0 or fast_pass_pixels <= 0:
        raise ValueError(f"min_face_px and fast_pass_pixels must be positive, got {min_face_px} "
                         f"and {fast_pass_pixels}")
    h, w = gray.shape
    return min(1.0, math.sqrt(fast_pass_pixels / (h * w)), HOG_WINDOW_PX / min_face_px)


def _second_scale(fast_boxes: list[Box], fast_scale: float, min_face_px: int) -> float | None:
    """The scale of a second look after the first pass, or None when none is needed: for
    small faces when it found none, for companions half as tall as the largest face when
    that face is small for the scale it was found at."""
    small_face_scale = HOG_WINDOW_PX / min_face_px
    if not fast_boxes:
        return small_face_scale if fast_scale < small_face_scale else None
    largest_px = max(bottom - top for top, _, bottom, _ in fast_boxes)
    companion_scale = min(small_face_scale, HOG_WINDOW_PX / (COMPANION_FACE_RATIO * largest_px))
    # Only worth a second scan when it reaches clearly smaller faces than the first did.
    return companion_scale if companion_scale > 1.2 * fast_scale else None


def _merge(fast_boxes: list[Box], finer: list[Box]) -> list[Box]:
    """Union of both passes; where both found a face, the finer pass's box."""
    return finer + [box for box in fast_boxes if all(_iou(box, other) < 0.3 for other in finer)]


def _finer_boxes(gray: np.ndarray, scale: float, fast_scale: float) -> list[Box]:
    """The look for small faces at `scale` when the first pass, at `fast_scale`, found none;
    on two cores. The scaled frame is cut into two halves along its longer side, scanned in
    two threads (dlib's detector releases the GIL). The halves overlap by more than the
    largest face this look must find (smaller than 80 px at `fast_scale`) with the
    detector's margin around it, so each such face is whole in one half. A box that
    touches the side where its half was cut is dropped (that face is whole in the other
    half, or a larger one cut short), and a face both halves found is kept once. About
    0.65 of the time of one scan of the whole frame."""
    scaled = _scaled(gray, scale)
    overlap = math.ceil(1.25 * HOG_WINDOW_PX * scale / fast_scale) + 2 * HOG_WINDOW_PX
    h, w = scaled.shape
    axis, length = (1, w) if w >= h else (0, h)
    if _CORES < 2 or length < 2 * overlap:
        return _detect(scaled, scale, gray.shape)
    cut = length // 2
    spans = ((0, cut + overlap // 2), (cut - overlap // 2, length))

    def scan(span: tuple[int, int]) -> list[Box]:
        start, stop = span
        tile = np.ascontiguousarray(scaled[:, start:stop] if axis else scaled[start:stop])
        found = []
        for top, right, bottom, left in face_library().face_locations(tile, number_of_times_to_upsample=0,
                                                                         model="hog"):
            near, far = (left, right) if axis else (top, bottom)
            if (start > 0 and near < _CUT_MARGIN_PX) or (stop < length and far > stop - start - _CUT_MARGIN_PX):
                continue
            found.append((top, right + start, bottom, left + start) if axis else
                         (top + start, right, bottom + start, left))
        return found

    with ThreadPoolExecutor(2, thread_name_prefix="face-scan") as pool:
        first, second = pool.map(scan, spans)
    return _to_frame(first + [box for box in second if all(_iou(box, other) < 0.5 for other in first)],
                     scale, gray.shape)


def _refine(gray: np.ndarray, fast_boxes: list[Box], fast_scale: float, min_face_px: int) -> list[Box]:
    """The second look, if one is needed: for small faces when the first pass found none
    (in two halves at once, as nothing else is to be done meanwhile), else for companions
    (in one scan, as recognize_burst runs it beside the encoder)."""
    scale = _second_scale(fast_boxes, fast_scale, min_face_px)
    if scale is None:
        return fast_boxes
    if not fast_boxes:
        return _finer_boxes(gray, scale, fast_scale)
    return _merge(fast_boxes, _hog_boxes(gray, scale))


def _largest_first(boxes: list[Box], max_faces: int | None) -> list[Box]:
    boxes = sorted(boxes, key=box_area, reverse=True)
    return boxes if max_faces is None else boxes[:max_faces]


def detect_faces(frame: np.ndarray, *, min_face_px: int = DEFAULT_MIN_FACE_PX,
                 max_faces: int | None = DEFAULT_MAX_FACES, coarse_pass_pixels: int = COARSE_PASS_PIXELS,
                 fast_pass_pixels: int = FAST_PASS_PIXELS) -> list[Box]:
    """Face boxes in `frame` (full-resolution coordinates), largest first, at most
    `max_faces` (None: all).

    The coarse pass scans a grayscale copy scaled to about `coarse_pass_pixels`, the fast
    pass (when that finds nothing) one of about `fast_pass_pixels`. If neither finds
    anything, a second pass scans at the scale where a face `min_face_px` high spans the
    detector's 80 px window. If they find a face that is small for their scale, a
    companion pass scans at the scale that also finds faces half as tall, so the people
    standing next to the visitor are not missed. Faces much smaller than the largest one
    are not looked for: a doorbell announces who stands in front of it, not passers-by."""
    gray = to_gray(frame)
    boxes, scale = _first_pass(gray, min_face_px, coarse_pass_pixels, fast_pass_pixels)
    return _largest_first(_refine(gray, boxes, scale, min_face_px), max_faces)


def find_face_near(frame: np.ndarray, anchor: Box, *, margin: float = 0.5,
                   face_px: int = 120) -> Box | None:
    """The face in `frame` that overlaps `anchor` (a box from another frame of the same
    burst), found by scanning only the region around it, scaled so the face is about
    `face_px` high; None if it is not there. About 5 ms instead of a whole-frame scan."""
    top, right, bottom, left = anchor
    size = max(bottom - top, right - left, 1)
    pad = int(size * margin)
    gray = to_gray(frame)
    y0, x0 = max(0, top - pad), max(0, left - pad)
    crop = gray[y0:bottom + pad, x0:right + pad]
    if crop.size == 0:
        return None
    found = [(t + y0, r + x0, b + y0, l + x0) for t, r, b, l in _hog_boxes(crop, face_px / size)]
    best = max(found, key=lambda box: _iou(anchor, box), default=None)
    return best if best is not None and _iou(anchor, best) >= 0.3 else None


def encode_faces(frame: np.ndarray, boxes: Sequence[Box], *, model: str = DEFAULT_MODEL) -> list[np.ndarray]:
    """128-d encodings of the faces at `boxes` in the full-resolution RGB frame.

    dlib copies the whole image it is given into its own format before it looks at the
    landmarks (about 6 ms for a 3-megapixel photo), so it gets the region around the faces
    only: the landmarks fall inside each box and the aligned 150×150 chip reaches a quarter
    of the face beyond it, well inside a margin of one face size. Same encodings, bit for
    bit (tests/doorbell/test_recognition.py)."""
    if not boxes:
        return []
    h, w = frame.shape[:2]
    margin = max(max(bottom - top, right - left) for top, right, bottom, left in boxes)
    y0 = max(0, min(top for top, _, _, _ in boxes) - margin)
    x0 = max(0, min(left for _, _, _, left in boxes) - margin)
    y1 = min(h, max(bottom for _, _, bottom, _ in boxes) + margin)
    x1 = min(w, max(right for _, right, _, _ in boxes) + margin)
    region = np.ascontiguousarray(frame[y0:y1, x0:x1])
    shifted = [(top - y0, right - x0, bottom - y0, left - x0) for top, right, bottom, left in boxes]
    return face_library().face_encodings(region, known_face_locations=shifted, num_jitters=1, model=model)


# -- bursts --------------------------------------------------------------------------------

def _face_sharpness(frame: np.ndarray, box: Box) -> float:
    """Sharpness of the face region, resized to a common size so faces of different sizes
    compare fairly (the Laplacian variance depends on scale)."""
    top, right, bottom, left = box
    crop = frame[top:bottom, left:right]
    if crop.size == 0:
        return 0.0
    return sharpness(resize(np.ascontiguousarray(crop), 128, 128))


def choose_frame(frames: Sequence[np.ndarray], detections: Sequence[Sequence[Box]]) -> int:
    """Index of the frame to keep as the snapshot: among frames whose largest face is nearly
    as large as the largest face of the burst (within 20 %), the one where that face is
    sharpest; with no face anywhere, the sharpest frame. `detections` holds each frame's
    boxes, largest first."""
    if not frames:
        raise ValueError("choose_frame needs at least one frame")
    largest = [box_area(boxes[0]) if boxes else 0 for boxes in detections]
    top_area = max(largest, default=0)
    if top_area == 0:
        return max(range(len(frames)), key=lambda i: sharpness(frames[i]))
    candidates = [i for i, area in enumerate(largest) if area >= 0.8 * top_area]
    return max(candidates, key=lambda i: _face_sharpness(frames[i], detections[i][0]))


def _follow(anchors: Sequence[Box], boxes: Sequence[Box], gray: np.ndarray) -> list[Box | None]:
    """Where each anchor face (from the snapshot) is in another frame of the burst: the
    fast-pass box that overlaps it, else a local search around it, else None. A burst
    spans a fraction of a second, so a face overlaps itself from frame to frame."""
    taken: set[int] = set()
    placed: list[Box | None] = []
    for anchor in anchors:
        overlap, j = max(((_iou(anchor, box), j) for j, box in enumerate(boxes) if j not in taken),
                         default=(0.0, -1))
        if overlap >= 0.3:
            taken.add(j)
            placed.append(boxes[j])
        else:
            placed.append(find_face_near(gray, anchor))
    return placed


def _settled(matches: Sequence[Match], needed: int, stranger_distance: float) -> bool:
    """Whether one more frame's encoding could no longer change what `vote` says about a
    face: `needed` frames agree on one known name and none disagrees, or every frame so far
    shows someone clearly not enrolled (nobody within `stranger_distance`, beyond the
    tolerance and its uncertain band). The snapshot is the burst's sharpest frame of the
    face, so a clear stranger there is not worth two more encodings."""
    if not matches:
        return False
    if all(m.status == UNKNOWN and (m.distance is None or m.distance >= stranger_distance) for m in matches):
        return True
    return len(matches) >= needed and all(m.status == KNOWN for m in matches) and len({m.name for m in matches}) == 1


class _Encoder:
    """encode_faces, with the CPU time of the calling thread spent in it (the rest of a
    recognition is detection). CPU time, not wall time: the companion scan runs in another
    thread meanwhile, and on a busy machine the two share a core, which wall time would
    book as encoding (the encoder runs in the calling thread only: BLAS is held to one
    thread, dlib_faces.py)."""

    def __init__(self, model: str):
        self.model = model
        self.seconds = 0.0

    def __call__(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        started = time.thread_time()
        try:
            return encode_faces(frame, boxes, model=self.model)
        finally:
            self.seconds += time.thread_time() - started


def _anchors_while_encoding(frame: np.ndarray, gray: np.ndarray, boxes: list[Box], scale: float,
                            min_face_px: int, max_faces: int, encode: _Encoder
                            ) -> tuple[list[Box], dict[int, np.ndarray]]:
    """The snapshot frame's faces: the first pass's, and the second look's when one is
    needed. When both are, the second scan runs in another thread while the first pass's
    faces are encoded: dlib's HOG detector and the encoder's BLAS both release the GIL,
    so the two overlap on two cores. Returns the anchors, largest first, and the encodings
    already made, by anchor index (a face both passes found keeps its encoding)."""
    second = _second_scale(boxes, scale, min_face_px)
    if second is None or not boxes:  # nothing to encode meanwhile
        return _largest_first(_refine(gray, boxes, scale, min_face_px), max_faces), {}
    early = _largest_first(boxes, max_faces)
    scaled = _scaled(gray, second)
    found: list[Box] = []
    failed: list[BaseException] = []
    entered = threading.Event()

    def scan() -> None:
        entered.set()  # from here the thread is in dlib's detector, which releases the GIL
        try:
            found.extend(_detect(scaled, second, gray.shape))
        except BaseException as exc:  # re-raised in the caller's thread below
            failed.append(exc)

    scanner = threading.Thread(target=scan, name="face-scan", daemon=True)
    scanner.start()
    entered.wait()
    try:
        encodings = encode(frame, early)
    finally:
        scanner.join()
    if failed:
        raise failed[0]
    anchors = _largest_first(_merge(boxes, found), max_faces)
    ready: dict[int, np.ndarray] = {}
    used: set[int] = set()
    for i, anchor in enumerate(anchors):
        overlap, j = max(((_iou(anchor, box), j) for j, box in enumerate(early) if j not in used),
                         default=(0.0, -1))
        if overlap >= 0.5:
            used.add(j)
            ready[i] = encodings[j]
    return anchors, ready


def recognize_burst(frames: Sequence[np.ndarray], known: Mapping[str, Sequence[np.ndarray]], *,
                    tolerance: float = DEFAULT_TOLERANCE,
                    uncertain_margin: float = DEFAULT_UNCERTAIN_MARGIN,
                    min_face_px: int = DEFAULT_MIN_FACE_PX, max_faces: int = DEFAULT_MAX_FACES,
                    max_encoded_frames: int = DEFAULT_MAX_ENCODED_FRAMES,
                    min_votes: int = DEFAULT_MIN_VOTES, model: str = DEFAULT_MODEL,
                    coarse_pass_pixels: int = COARSE_PASS_PIXELS,
                    fast_pass_pixels: int = FAST_PASS_PIXELS) -> VisitorResult:
    """Who is at the door, from a burst of frames.

    1. The first detection pass (coarse, then fast if needed) on every frame (cheap) and
       `choose_frame` pick the snapshot.
    2. Only the snapshot gets the full `detect_faces` treatment (small faces, companions),
       overlapped with encoding its faces already found (`_anchors_while_encoding`): the
       frames of a burst show the same scene, so scanning each one at the fine scale
       would mostly find the same faces again.
    3. The snapshot's faces are encoded and named. A face whose verdict another frame
       could still change (`_settled`: fewer than two agreeing known frames, or not a
       clear stranger) is followed into the next frame (those with the largest faces
       first), by overlap with a fast-pass box or by `find_face_near`, and encoded there;
       at most `max_encoded_frames` frames are encoded. `vote` decides per face. A known
       visitor costs two encodings and a stranger one, instead of one per frame."""
    started = time.perf_counter()
    if not frames:
        return VisitorResult((), None, {"detect": 0.0, "encode": 0.0, "total": 0.0})
    encode = _Encoder(model)
    grays = [to_gray(frame) for frame in frames]
    passes = [_first_pass(gray, min_face_px, coarse_pass_pixels, fast_pass_pixels) for gray in grays]
    fast = [_largest_first(boxes, None) for boxes, _ in passes]
    chosen = choose_frame(frames, fast)
    anchors, ready = _anchors_while_encoding(frames[chosen], grays[chosen], fast[chosen], passes[chosen][1],
                                             min_face_px, max_faces, encode)
    others = sorted((i for i in range(len(frames)) if i != chosen and fast[i]),
                    key=lambda i: box_area(fast[i][0]), reverse=True)
    if len(others) < max_encoded_frames - 1:
        # Faces only the fine passes found: look for them in the frames the fast pass
        # drew a blank on too.
        others += [i for i in range(len(frames)) if i != chosen and not fast[i]]
    needed = min(min_votes, len(frames) // 2 + 1)
    votes: list[list[Match]] = [[] for _ in anchors]

    def open_faces() -> list[int]:
        return [face for face in range(len(anchors))
                if not _settled(votes[face], needed, tolerance + uncertain_margin)]

    # The snapshot's faces first; another frame only for the faces whose verdict it could
    # still change, up to `max_encoded_frames` frames in all (each one costs an encoding).
    encoded_frames = 0
    for i in [chosen] + others:
        wanted = open_faces()
        if not wanted or encoded_frames >= max_encoded_frames:
            break
        if i == chosen:
            placed, done = dict(zip(wanted, anchors)), ready
        else:
            placed, done = dict(zip(wanted, _follow([anchors[f] for f in wanted], fast[i], grays[i]))), {}
        todo = [(face, box) for face, box in placed.items() if box is not None and face not in done]
        if len(todo) + len(done) == 0:
            continue
        encoded_frames += 1
        encodings = dict(done)
        encodings.update(zip((face for face, _ in todo), encode(frames[i], [box for _, box in todo])))
        for face in sorted(encodings):
            votes[face].append(match(encodings[face], known, tolerance=tolerance,
                                     uncertain_margin=uncertain_margin))
    results = []
    for anchor, face_votes in zip(anchors, votes):
        verdict = vote(face_votes, min_votes=min_votes, burst_frames=len(frames))
        agreeing = sum(1 for m in face_votes if m.status == KNOWN and m.name == verdict.name)
        results.append(FaceResult(
            name=verdict.name, status=verdict.status, confidence=round(verdict.confidence, 3),
            box=anchor, distance=None if verdict.distance is None else round(verdict.distance, 4),
            votes=agreeing if verdict.status == KNOWN else 0, frames=len(face_votes)))
    finished = time.perf_counter()
    # "detect" is everything but encoding: the detection not hidden behind it.
    return VisitorResult(tuple(results), chosen, {
        "detect": round((finished - started - encode.seconds) * 1000, 1),
        "encode": round(encode.seconds * 1000, 1),
        "total": round((finished - started) * 1000, 1),
    })
