"""The face encoder's ResNet run on numpy (services/doorbell/face_net.py) against dlib's own
forward pass of the same model file, on every face of the shared photos."""

from __future__ import annotations

import json

import dlib
import face_recognition_models as models
import numpy as np
import pytest

from hardware.camera import load_rgb
from services.doorbell import face_net

MODEL = models.face_recognition_model_location()


@pytest.fixture(scope="module")
def net() -> face_net.FaceNet:
    return face_net.load(MODEL)


def _faces(photos):
    """(photo, 5-point landmarks) of every face dlib's detector finds in the shared photos."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    for entry in json.loads((photos / "manifest.json").read_text())["images"]:
        image = load_rgb(photos / entry["file"])
        for box in detector(image, 1):
            yield entry["file"], image, predictor(image, box)


def test_the_numpy_resnet_gives_dlibs_encodings_within_float_rounding_on_every_shared_face(net, photos):
    """Every face in the photos (dozens, known, unknown, IR and small), through dlib's
    compute_face_descriptor and through face_net: the same 128 numbers to about 1e-6."""
    reference = dlib.face_recognition_model_v1(MODEL)
    distances = {}
    for name, image, shape in _faces(photos):
        theirs = np.array(reference.compute_face_descriptor(image, shape, 1))
        ours = net.encode(dlib.get_face_chip(image, shape, face_net.CHIP_SIZE, 0.25))
        assert ours.shape == (128,) and ours.dtype == np.float64
        distances[name] = float(np.linalg.norm(ours - theirs))
    assert len(distances) >= 20
    assert max(distances.values()) < 1e-5, distances


def test_a_chip_of_the_wrong_size_is_refused_with_the_size_expected(net):
    with pytest.raises(ValueError, match=r"150×150×3, got \(100, 100, 3\)"):
        net.encode(np.zeros((100, 100, 3), np.uint8))


def test_another_dlib_model_file_is_refused_naming_the_file_and_the_fix():
    """The 5-point landmark model is a dlib file too, but not a network."""
    with pytest.raises(face_net.ModelFormatError, match=r"shape_predictor_5.*not a dlib metric-learning network.*reinstall"):
        face_net.load(models.pose_predictor_five_point_model_location())


def test_a_truncated_model_file_is_refused_as_damaged(tmp_path):
    cut = tmp_path / "cut.dat"
    data = open(MODEL, "rb").read()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(face_net.ModelFormatError, match=r"cut\.dat: truncated or damaged.*reinstall face_recognition_models"):
        face_net.load(cut)


def test_a_layer_the_encoder_does_not_implement_is_refused_by_name(tmp_path):
    """A network with another layer type (here the first relu_ renamed to an equally long
    "prelu") must not run with that layer silently skipped."""
    data = open(MODEL, "rb").read()
    changed = tmp_path / "other.dat"
    changed.write_bytes(data.replace(b"\x05relu_", b"\x05prelu", 1))
    with pytest.raises(face_net.ModelFormatError, match=r"layer 'prelu' at byte \d+: not one of the face ResNet's layers"):
        face_net.load(changed)
