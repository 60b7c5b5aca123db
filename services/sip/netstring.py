"""Netstring framing (`<length>:<payload>,`, cr.yp.to/proto/netstrings.txt), the framing of
baresip's ctrl_tcp module. Written by hand: the format is a dozen lines, and the PyPI
packages for it are unmaintained and do not bound the length, which a reader fed by another
process must do.

Not responsible for: what the payload means (control.py parses the JSON).
"""

from __future__ import annotations

MAX_FRAME = 256 * 1024  # baresip's largest messages (help texts, call lists) are a few kB
_MAX_DIGITS = len(str(MAX_FRAME))


class NetstringError(ValueError):
    """The stream is not netstrings any more; nothing after this point can be trusted, so the
    reader drops the connection (a stream has no resynchronisation point)."""


def encode(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    """Feed bytes as they arrive; `feed` returns the complete payloads. `pending` says how
    many bytes of an unfinished frame are held (a truncated frame at EOF)."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while self._buf:
            colon = self._buf.find(b":", 0, _MAX_DIGITS + 1)
            if colon < 0:
                if len(self._buf) > _MAX_DIGITS or not self._buf.isdigit():
                    raise NetstringError(f"bad length prefix {bytes(self._buf[:_MAX_DIGITS + 1])!r}")
                break  # the length is still arriving
            digits = bytes(self._buf[:colon])
            if not digits.isdigit():
                raise NetstringError(f"bad length prefix {digits!r}")
            size = int(digits)
            if size > self.max_frame:
                raise NetstringError(f"frame of {size} bytes is over the {self.max_frame}-byte limit")
            end = colon + 1 + size
            if len(self._buf) <= end:
                break  # the payload or its comma is still arriving
            if self._buf[end] != ord(","):
                raise NetstringError(f"frame of {size} bytes does not end with ','")
            frames.append(bytes(self._buf[colon + 1:end]))
            del self._buf[:end + 1]
        return frames
