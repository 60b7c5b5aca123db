"""glibc's allocator set up for a 512 MB device, for the runtime and every child it starts.

Two glibc defaults make a long-running, multi-threaded Python process on a small board keep
memory it no longer uses (issue 9 item 11: the runtime grew by ~40 MB on its first
recognised ring and kept it):
- one malloc arena per thread that ever allocated, up to 8 per core, each holding freed
  memory of its own: the runtime has a dozen threads;
- a dynamic mmap threshold: after the first large block (a camera frame is 2.7 MB) is
  freed, glibc raises the threshold up to 32 MB, so later frames come from the heap and
  their pages stay with the process after they are freed.
Two arenas and a fixed 128 KiB threshold (frames mmapped, and returned to the kernel when
freed) are glibc's documented tunables for this (mallopt(3), M_ARENA_MAX and
M_MMAP_THRESHOLD); they cost a little allocation speed that nothing here notices.

This process is tuned through mallopt (its environment was read by glibc before Python
started); children are tuned through the environment variables glibc reads at their start
(MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_), set here unless the user set them. No-op off
glibc (musl has neither knob).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import MutableMapping

ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 128 * 1024
# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Apply the limits to this process and put them in `environ` for its children.
    True when this process's allocator took them (glibc)."""
    environ.setdefault("MALLOC_ARENA_MAX", str(ARENA_MAX))
    environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    arenas = int(environ["MALLOC_ARENA_MAX"])
    threshold = int(environ["MALLOC_MMAP_THRESHOLD_"])
    return bool(mallopt(_M_ARENA_MAX, arenas)) and bool(mallopt(_M_MMAP_THRESHOLD, threshold))
