"""What several benchmarks share: their command line, latency percentiles and a process's RSS."""

from __future__ import annotations

import argparse
import statistics


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a benchmark whose module docstring `doc` says what it measures:
    --help shows that text as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def percentiles(samples_ms: list[float]) -> dict:
    """p50, p99 (nearest rank) and max of millisecond samples."""
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3),
            "max_ms": round(ordered[-1], 3), "n": len(ordered)}


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (VmRSS of /proc/PID/status)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")
