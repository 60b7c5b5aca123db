"""dlib's HOG face detector, 5-point landmarks and ResNet face encoder, loaded without the rest.

face_recognition's api.py loads every model it ships as soon as it is imported, among them
the 68-point landmark predictor (about 100 MB of the recognition child's memory) and the CNN
detector, though this pipeline uses only the HOG detector, the 5-point predictor and the
encoder. This module offers the two calls the pipeline makes, `face_locations` and
`face_encodings`, with face_recognition's semantics (its api.py, MIT licence, A. Geitgey:
boxes as (top, right, bottom, left) trimmed to the image, one encoding per given box) over
the model files of face_recognition_models; the 68-point predictor is loaded only on the
first use of model="large". Written by hand because face_recognition cannot be imported
without loading everything; tests/doorbell/test_recognition.py checks both give the very
same boxes and encodings (to about 1e-6: the encoder's network runs in face_net.py on numpy's
BLAS, about six times faster than dlib's own loops; face_net.py says why).

numpy's BLAS is held to one thread in the processes that import this module: the encoder is
fast enough on one core, and the other cores stay free for the button, the camera and the
other workers (BLAS threads that wait for work spin on their core).

Imported only in the recognition child and the one-shot encoder (face_library.py loads it
through load_face_library, which turns a missing library into a clear reason).
"""

from __future__ import annotations

import queue
from typing import Sequence

import dlib
import face_recognition_models as models
import numpy as np
from threadpoolctl import threadpool_limits

from services.doorbell import face_net

threadpool_limits(limits=1, user_api="blas")

# A detector object is not safe to share between threads (two scans at once corrupt its
# heap), and recognition scans the two halves of a frame at once (recognition._finer_boxes):
# each scan takes one of these. Building one takes about 0.26 s, so both are built here.
_detectors: queue.SimpleQueue = queue.SimpleQueue()
for _ in range(2):
    _detectors.put(dlib.get_frontal_face_detector())
_predictors = {"small": dlib.shape_predictor(models.pose_predictor_five_point_model_location())}
_encoder = face_net.load(models.face_recognition_model_location())


def _predictor(model: str):
    if model not in _predictors:
        if model != "large":
            raise ValueError(f"landmark model {model!r}: use \"small\" (5 points) or \"large\" (68 points)")
        _predictors["large"] = dlib.shape_predictor(models.pose_predictor_model_location())
    return _predictors[model]


def face_locations(img: np.ndarray, number_of_times_to_upsample: int = 1,
                   model: str = "hog") -> list[tuple[int, int, int, int]]:
    """Faces found by the HOG detector, as (top, right, bottom, left) within the image."""
    if model != "hog":
        raise ValueError(f"detector {model!r}: only \"hog\" is loaded on this device")
    height, width = img.shape[:2]
    detector = _detectors.get()  # waits while two other threads scan
    try:
        found = detector(img, number_of_times_to_upsample)
    finally:
        _detectors.put(detector)
    return [(max(r.top(), 0), min(r.right(), width), min(r.bottom(), height), max(r.left(), 0)) for r in found]


def face_encodings(face_image: np.ndarray, known_face_locations: Sequence[tuple[int, int, int, int]],
                   num_jitters: int = 1, model: str = "small") -> list[np.ndarray]:
    """The 128-number encoding of each face at `known_face_locations`: the face aligned on
    its landmarks into a 150×150 chip with a quarter of padding, as dlib's
    compute_face_descriptor does, through the ResNet."""
    if num_jitters != 1:
        raise ValueError(f"num_jitters={num_jitters}: this device encodes each face once, without jitter")
    predictor = _predictor(model)
    return [_encoder.encode(dlib.get_face_chip(
                face_image, predictor(face_image, dlib.rectangle(left, top, right, bottom)), face_net.CHIP_SIZE, 0.25))
            for top, right, bottom, left in known_face_locations]
