"""The runtime's allocator limits reach the children it starts (issue 9 item 11)."""

import subprocess
import sys

import pytest

from edge import malloc_tuning
from edge.testing.requirements import PLATFORM_SKIP


def test_children_inherit_the_arena_and_mmap_limits_unless_the_user_set_them():
    environ = {"MALLOC_ARENA_MAX": "4"}
    malloc_tuning.tune(environ)
    assert environ == {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}


def test_a_large_freed_block_goes_back_to_the_kernel_after_tuning():
    """With glibc's dynamic threshold a freed 8 MB frame raises the mmap threshold and the
    next frames stay on the heap; tuned, each frame is mmapped and unmapped when freed."""
    code = """
import ctypes, ctypes.util, sys
from edge import malloc_tuning
from edge.testing.requirements import PLATFORM_SKIP
if not malloc_tuning.tune({}):
    print("not glibc"); sys.exit(0)
def rss_kb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
import numpy as np
base = rss_kb()
for _ in range(20):
    frame = np.ones((1080, 1920, 4), np.uint8)  # 8 MB, touched
    small = [bytes(1000) for _ in range(100)]   # heap traffic between frames
    del frame
print(rss_kb() - base)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "not glibc":
        pytest.skip(f"{PLATFORM_SKIP} not glibc: there is no mallopt to tune")
    assert int(result.stdout) < 4096, f"{result.stdout.strip()} kB kept after the frames were freed"
