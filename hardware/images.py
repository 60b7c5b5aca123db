"""Image utilities shared by the cameras and by face recognition: decoding a photo into an
RGB array, fitting a picture into a camera frame, and measuring how sharp a frame is.

Pure functions on H×W×3 uint8 RGB arrays (the format every camera delivers); no device,
no state. Not responsible for capturing (hardware/camera/) or for finding faces
(services/doorbell/recognition.py).

Built on Pillow and numpy, not OpenCV: importing cv2 costs about 17 MB of resident memory
in every process that does (the runtime and the recognizer child), a Pi Zero 2 W has 512 MB,
and these few operations are all the device needs of it (issue 9 item 11). Only the USB
camera backend, hardware/camera/opencv.py, imports cv2, when it is chosen.
"""

from __future__ import annotations

from pathlib import Path

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
    resized = resize(image, max(1, round(w * scale)), max(1, round(h * scale)))
    new_h, new_w = resized.shape[:2]
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    top, left = (height - new_h) // 2, (width - new_w) // 2
    frame[top:top + new_h, left:left + new_w] = resized
    return frame


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` (RGB or grayscale uint8) scaled to width×height: area averaging when
    shrinking (no aliasing, like OpenCV's INTER_AREA), bilinear when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrinking = width * height < w * h
    filter_ = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), filter_))


def to_gray(frame: np.ndarray) -> np.ndarray:
    """Luma of an RGB frame (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, as OpenCV's RGB2GRAY);
    a grayscale frame is returned as it is."""
    return np.asarray(Image.fromarray(frame).convert("L")) if frame.ndim == 3 else frame


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the grayscale frame: higher is sharper. The classic
    focus measure (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy",
    ICPR 2000); cheap enough to rank every frame of a burst. The 4-neighbour kernel with
    mirrored borders gives what OpenCV's Laplacian (ksize 1, BORDER_REFLECT_101) gives."""
    gray = np.pad(to_gray(frame).astype(np.int32), 1, mode="reflect")
    laplacian = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
                 - 4 * gray[1:-1, 1:-1])
    return float(laplacian.var())
