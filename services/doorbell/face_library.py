"""Loading the face library (dlib and its models) safely, in the processes that need it.

Only the recognition child and the one-shot enrollment encoder load it: the worker's own
process imports recognition.py for its result types and must not load dlib. A missing or
broken install becomes RecognitionUnavailable with the command that fixes it, never an
exit or a crash of the doorbell.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

FACE_LIBRARY = "services.doorbell.dlib_faces"  # face_recognition's two calls, only the models used
INSTALL_HINT = "pip install 'setuptools<81' face_recognition_models dlib-bin"


class RecognitionUnavailable(RuntimeError):
    """The face library cannot be loaded; the message says why and how to fix it."""


def load_face_library(module_name: str = FACE_LIBRARY) -> ModuleType:
    """Import the face library (dlib_faces, or face_recognition itself: both offer
    face_locations and face_encodings), turning its ways of failing into
    RecognitionUnavailable.

    face_recognition_models does `from pkg_resources import resource_filename`; setuptools
    81 removed pkg_resources, and face_recognition's api.py answers any exception from
    that import with print() and quit(), i.e. SystemExit. Setuptools 67.5 to 80 warn that
    pkg_resources is deprecated; under -W error / PYTHONWARNINGS=error that warning becomes
    the exception that triggers the quit(), so it is ignored for the import only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources")
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:
            reason = f"cannot import {module_name}: {exc}"
        except SystemExit:
            reason = (f"importing {module_name} called exit() (face_recognition_models or "
                      "pkg_resources is missing)")
    raise RecognitionUnavailable(f"recognition unavailable: {reason}; fix: {INSTALL_HINT}")


def face_library() -> ModuleType:
    """The face library, imported on first use (recognition.py is imported by the worker's
    process too, which must not load dlib)."""
    return sys.modules.get(FACE_LIBRARY) or load_face_library()
