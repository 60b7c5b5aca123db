"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat) run with numpy.

Why: the encoder is the doorbell's largest cost. dlib's Python wheel (dlib-bin) is built
without BLAS, so its forward pass multiplies matrices with dlib's own loops: about 90 ms
per face on x86, where numpy's BLAS does the same arithmetic in about 15 ms on one thread
(tests/bench/bench_recognition.py measures both in one run). Same model file, same
weights, same layers: the encodings agree with dlib's to about 1e-6 (float32 sums added
up in another order), far inside the 0.6 tolerance, so faces enrolled by either match.
Written by hand because no library runs dlib's nets other than dlib itself; only the
layers this one model uses are implemented, and anything else in the file is refused.

The file is dlib's serialization of
    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>
(dlib examples/dnn_face_recognition_ex.cpp), written innermost layer first. Its format:
integers as a length byte (sign in bit 7) and that many little-endian bytes; floats as an
integer mantissa and exponent; strings as a length and the bytes; tensors as version,
four dimensions and raw little-endian float32s (dlib/dnn/tensor.h). Tag and skip layers
write nothing of their own, so a residual block is read as the layers it writes:
con, affine, relu, con, affine, [avg_pool: the shortcut of a down-sampling block], add_prev, relu.

Tensors here are H×W×C float32 (one face at a time); dlib's are N×C×H×W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CHIP_SIZE = 150  # input_rgb_image_sized<150>: dlib.get_face_chip(image, shape, 150, 0.25)


class ModelFormatError(ValueError):
    """The file is not the dlib face-recognition ResNet this module knows how to run."""


@dataclass(frozen=True)
class Conv:
    """A convolution with the affine (batch-norm) layer after it folded into its weights."""
    weights: np.ndarray  # (kh * kw * C_in, C_out), rows in (kh, kw, C_in) order, as _windows builds them
    bias: np.ndarray
    size: int
    stride: int
    padding: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.padding:
            p = self.padding
            x = np.pad(x, ((p, p), (p, p), (0, 0)))
        windows = _windows(x, self.size, self.stride)
        rows, cols = windows.shape[:2]
        out = windows.reshape(rows * cols, -1) @ self.weights
        out += self.bias
        return out.reshape(rows, cols, -1)


@dataclass(frozen=True)
class Block:
    """A residual block: relu(affine(con(relu(affine(con(x))))) + shortcut(x))."""
    first: Conv
    second: Conv
    pool: int | None  # the shortcut's average pool (size = stride) in a down-sampling block

    def __call__(self, x: np.ndarray) -> np.ndarray:
        branch = self.second(np.maximum(self.first(x), 0))
        shortcut = _avg_pool(x, self.pool) if self.pool else x
        return np.maximum(_add_zero_padded(branch, shortcut), 0)


def _windows(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(rows, cols, size, size, C) view of every window a size×size kernel visits."""
    view = sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride]
    return view.transpose(0, 1, 3, 4, 2)


def _max_pool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    return sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride].max(axis=(3, 4))


def _avg_pool(x: np.ndarray, size: int) -> np.ndarray:
    """dlib's avg_pool<size,size,size,size>: no padding, a last partial window dropped."""
    return sliding_window_view(x, (size, size), axis=(0, 1))[::size, ::size].mean(axis=(3, 4), dtype=np.float32)


def _add_zero_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: the sum has the larger of both sizes in every dimension, each input
    counting as zero where it is smaller (a down-sampling block's shortcut has fewer
    channels, and on odd sizes its pool gives one row and column more than the conv)."""
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))
    if a.shape == shape and b.shape == shape:
        return a + b
    out = np.zeros(shape, np.float32)
    out[:a.shape[0], :a.shape[1], :a.shape[2]] += a
    out[:b.shape[0], :b.shape[1], :b.shape[2]] += b
    return out


class FaceNet:
    """The 128-number face encoder. `encode` takes a 150×150 RGB face chip."""

    def __init__(self, mean_rgb: np.ndarray, stem: Conv, pool: tuple[int, int], blocks: list[Block],
                 fc: np.ndarray):
        self._mean_rgb = mean_rgb
        self._stem = stem
        self._pool = pool
        self._blocks = blocks
        self._fc = fc

    def encode(self, chip: np.ndarray) -> np.ndarray:
        if chip.shape != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"a face chip is {CHIP_SIZE}×{CHIP_SIZE}×3, got {chip.shape}")
        x = (chip.astype(np.float32) - self._mean_rgb) / np.float32(256)  # input_rgb_image
        x = _max_pool(np.maximum(self._stem(x), 0), *self._pool)
        for block in self._blocks:
            x = block(x)
        return (x.mean(axis=(0, 1), dtype=np.float32) @ self._fc).astype(np.float64)


# -- reading dlib's file -------------------------------------------------------------------

class _Reader:
    """dlib's serialization primitives (dlib/serialize.h, dlib/float_details.h, dlib/dnn/tensor.h)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def int(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        return math.ldexp(mantissa, self.int())

    def str(self) -> str:
        size = self.int()
        text = self.data[self.pos:self.pos + size]
        self.pos += size
        return text.decode("ascii", "replace")

    def bools(self, count: int) -> None:
        self.pos += count  # serialize(bool) writes one character, '0' or '1'

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ModelFormatError(f"tensor version {version} at byte {self.pos}, expected 2")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        values = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32)
        self.pos += 4 * count
        return values.reshape(dims)

    def alias_tensor(self) -> tuple[int, ...]:
        self.int()  # version
        return tuple(self.int() for _ in range(4))

    def layer_state(self) -> None:
        """What add_layer writes after a layer's own details: three flags and three
        tensors kept for training (empty in a saved model, skipped whatever they hold)."""
        self.bools(3)
        for _ in range(3):
            self.tensor()


def _read_con(r: _Reader) -> dict:
    params = r.tensor().ravel()
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(7))
    shape = r.alias_tensor()
    r.alias_tensor()  # biases: filters of them, after the weights
    for _ in range(4):
        r.float()  # learning-rate and weight-decay multipliers
    if rows != cols or stride_y != stride_x or pad_y != pad_x or shape[0] != filters:
        raise ModelFormatError(f"convolution {rows}×{cols} stride {stride_y},{stride_x} padding "
                               f"{pad_y},{pad_x}: only square ones are supported")
    size = int(np.prod(shape))
    return {"weights": params[:size].reshape(shape), "bias": params[size:size + filters],
            "size": rows, "stride": stride_y, "padding": pad_y}


def _read_affine(r: _Reader) -> tuple[np.ndarray, np.ndarray]:
    params = r.tensor().ravel()
    channels = r.alias_tensor()[1]
    r.alias_tensor()
    r.int()  # mode
    return params[:channels], params[channels:2 * channels]


def _read_pool(r: _Reader) -> tuple[int, int, int, int, int, int]:
    return tuple(r.int() for _ in range(6))  # rows, cols, stride y, x, padding y, x


def _fold(con: dict, affine: tuple[np.ndarray, np.ndarray]) -> Conv:
    """affine(con(x)) as one convolution: gamma·(w·x + b) + beta."""
    gamma, beta = affine
    weights = con["weights"].transpose(2, 3, 1, 0)  # (C_out, C_in, kh, kw) -> (kh, kw, C_in, C_out)
    weights = (weights * gamma).reshape(-1, weights.shape[-1])
    return Conv(np.ascontiguousarray(weights, np.float32), (gamma * con["bias"] + beta).astype(np.float32),
                con["size"], con["stride"], con["padding"])


def _layers(r: _Reader) -> list[tuple[str, object]]:
    """Every layer's name and details, innermost first, up to and including fc_2."""
    readers = {"con_4": _read_con, "affine_": _read_affine, "max_pool_2": _read_pool,
               "avg_pool_2": _read_pool, "relu_": lambda r: None, "add_prev_": lambda r: None}
    layers = []
    while True:
        name = r.str()
        if name == "fc_2":
            outputs, inputs = r.int(), r.int()
            weights = r.tensor().reshape(inputs, outputs)
            layers.append((name, weights))
            return layers
        if name not in readers:
            raise ModelFormatError(f"layer {name!r} at byte {r.pos}: not one of the face ResNet's layers")
        layers.append((name, readers[name](r)))
        r.layer_state()
        if len(layers) == 1:
            r.int()  # the layer on the input also writes its sample expansion factor


def _expect(layers: list, index: int, name: str):
    if index >= len(layers) or layers[index][0] != name:
        found = layers[index][0] if index < len(layers) else "the end"
        raise ModelFormatError(f"layer {index}: expected {name}, found {found}")
    return layers[index][1]


def load(path: str | Path) -> FaceNet:
    """Read the face ResNet from dlib's model file (face_recognition_models ships it).
    Raises ModelFormatError, naming the file and what was wrong, for any other file."""
    data = Path(path).read_bytes()
    try:
        return _parse(data)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc} (expected dlib_face_recognition_resnet_model_v1.dat from "
                               f"face_recognition_models; reinstall it)") from None
    except (IndexError, ValueError) as exc:  # a read past the end of the file
        raise ModelFormatError(f"{path}: truncated or damaged ({exc}); reinstall face_recognition_models") from None


def _parse(data: bytes) -> FaceNet:
    r = _Reader(data)
    r.int()  # the loss layer's version
    if r.str() != "loss_metric_2":
        raise ModelFormatError("not a dlib metric-learning network")
    # The nested layers' versions come next; the input layer's name ends them.
    start = data.find(b"\x01\x15input_rgb_image_sized", r.pos)
    if start < 0:
        raise ModelFormatError("no input_rgb_image_sized layer")
    r.pos = start
    r.str()
    mean_rgb = np.array([r.float(), r.float(), r.float()], np.float32)
    if (r.int(), r.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise ModelFormatError(f"the input is not {CHIP_SIZE}×{CHIP_SIZE}")

    layers = _layers(r)
    stem = _fold(_expect(layers, 0, "con_4"), _expect(layers, 1, "affine_"))
    _expect(layers, 2, "relu_")
    rows, cols, stride, _, pad, _ = _expect(layers, 3, "max_pool_2")
    if rows != cols or pad:
        raise ModelFormatError(f"max pool {rows}×{cols} padding {pad}: only square, unpadded ones are supported")
    i, blocks = 4, []
    while layers[i][0] == "con_4":
        first = _fold(_expect(layers, i, "con_4"), _expect(layers, i + 1, "affine_"))
        _expect(layers, i + 2, "relu_")
        second = _fold(_expect(layers, i + 3, "con_4"), _expect(layers, i + 4, "affine_"))
        i += 5
        pool = None
        if layers[i][0] == "avg_pool_2":
            pool = layers[i][1][0]
            i += 1
        _expect(layers, i, "add_prev_")
        _expect(layers, i + 1, "relu_")
        blocks.append(Block(first, second, pool))
        i += 2
    if _expect(layers, i, "avg_pool_2")[:2] != (0, 0):
        raise ModelFormatError(f"layer {i}: expected the average over the whole image")
    fc = _expect(layers, i + 1, "fc_2")
    return FaceNet(mean_rgb, stem, (rows, stride), blocks, np.ascontiguousarray(fc, np.float32))
