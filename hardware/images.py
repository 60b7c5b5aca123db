"""Image utilities shared by the cameras and by face recognition: decoding a photo into an
RGB array, fitting a picture into a camera frame, and measuring how sharp a frame is.

Pure functions on H×W×3 uint8 RGB arrays (the format every camera delivers); no device,
no state. Not responsible for capturing (hardware/camera/) or for finding faces
(services/doorbell/recognition.py).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

# A dark, slightly blue-grey background, like the unlit porch around a visitor.
PORCH_BACKGROUND_RGB = (18, 20, 26)


def load_rgb(path: str | Path, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Decode an image file into an H×W×3 uint8 RGB array.

    EXIF orientation is applied (phone photos are often stored sideways with a rotation tag)
    and transparency is composited onto `background`: `convert("RGB")` alone would keep
    whatever colour hides under transparent pixels."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*background, 255))
            image = Image.alpha_composite(canvas, rgba)
        return np.asarray(image.convert("RGB"))


def fit_into_frame(image: np.ndarray, width: int, height: int,
                   background: tuple[int, int, int] = PORCH_BACKGROUND_RGB) -> np.ndarray:
    """Scale `image` to fit inside width×height keeping its aspect ratio, centred on a dark
    background: what a doorbell sees of a person standing in front of it."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    top, left = (height - new_h) // 2, (width - new_w) // 2
    frame[top:top + new_h, left:left + new_w] = resized
    return frame


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the grayscale frame: higher is sharper. The classic
    focus measure (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy",
    ICPR 2000); cheap enough to rank every frame of a burst."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())
