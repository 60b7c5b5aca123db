"""Visitor snapshots on disk: one JPEG per ring, kept for a limited count and age.

Responsible for: encoding the chosen frame as JPEG, writing it atomically and privately
(mode 0600 in a 0700 folder), and retention: at most `keep` files, none older than
`max_age_days`. Faces of visitors are personal data; the limits are the privacy promise.

Time: a file's age is wall-clock by nature (it must survive reboots, and a Pi has no
real-time clock), so it comes from the file's mtime. Two guards keep a wrong clock from
doing harm: a file dated in the future (the clock stepped back) is not aged, and a file
written before the clock was set (dated before SANE_WALL, e.g. 1970 after a boot without
network) is re-dated to the first set time the pruner sees, so it then lives at most
`max_age_days` more instead of vanishing at once or never expiring. Order for the count
limit comes from a sequence number in the file name, not from any clock.

Not responsible for: which people a snapshot shows (faces_store.py's index), publishing it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import simplejpeg

log = logging.getLogger("services.doorbell.snapshots")

# 2024-01-01T00:00:00Z: no snapshot this software writes can honestly be older.
SANE_WALL = 1_704_067_200.0
_FILE = re.compile(r"^(\d{8})_[0-9TZ]+_([0-9A-Za-z_-]+)\.jpg$")


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    """An RGB frame as JPEG bytes (4:2:0, as Pillow's default).

    simplejpeg (libjpeg-turbo, picamera2's JPEG encoder) releases the GIL while it encodes;
    Pillow's encoder holds it for the whole ~4 ms of a 1280x720 frame, and in that time the
    runtime's other threads, the MQTT link's among them, cannot run: a ring published
    meanwhile waited for it (bench_doorbell.py's busy series)."""
    return simplejpeg.encode_jpeg(frame, quality=quality, colorspace="RGB", colorsubsampling="420")


def snapshot_directory(snapshot_dir: str, state_dir: Path | None) -> Path | None:
    """Where snapshots live: `[faces] snapshot_dir`, else <state dir>/snapshots (None when
    neither is known). The worker and `edge faces remove` both ask here."""
    if snapshot_dir:
        return Path(snapshot_dir)
    return Path(state_dir) / "snapshots" if state_dir is not None else None


def snapshot_folder(faces_cfg, state_dir: Path | None,
                    wall: Callable[[], float] = time.time) -> "SnapshotFolder | None":
    """The SnapshotFolder for a `[faces]` config section (None: nowhere to keep them)."""
    directory = snapshot_directory(faces_cfg.snapshot_dir, state_dir)
    if directory is None:
        return None
    return SnapshotFolder(directory, faces_cfg.snapshot_keep, faces_cfg.snapshot_max_age_days, wall=wall)


class SnapshotFolder:
    """Every file-system error is an OSError (disk full, read-only, permissions). `save`
    raises it (the caller rings on without a snapshot); `prune` and `remove` log it and
    report what they could not do, and never raise it."""

    def __init__(self, directory: Path, keep: int, max_age_days: float,
                 wall: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.keep = keep
        self.max_age_s = max_age_days * 86400.0
        self._wall = wall

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def files(self) -> list[Path]:
        """Snapshot files, newest first (by sequence number). OSError when the folder
        cannot be read (a missing folder is just empty)."""
        try:
            entries = [p for p in self.directory.iterdir() if _FILE.match(p.name)]
        except FileNotFoundError:
            return []
        return sorted(entries, key=lambda p: p.name, reverse=True)

    def _next_sequence(self) -> int:
        files = self.files()
        return int(_FILE.match(files[0].name).group(1)) + 1 if files else 1

    def save(self, event_id: str, jpeg: bytes, ts_wall: float) -> Path:
        """Write the snapshot of ring `event_id`; returns its path. Raises OSError (disk
        full, read-only, permissions): the caller carries on without it."""
        if not re.fullmatch(r"[0-9A-Za-z_-]+", event_id):
            raise ValueError(f"event id {event_id!r} cannot be part of a file name")
        self._ensure_dir()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts_wall))
        path = self.directory / f"{self._next_sequence():08d}_{stamp}_{event_id}.jpg"
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(jpeg)
            os.replace(tmp, path)
        except OSError:
            self._unlink_quietly(tmp)
            raise
        return path

    def prune(self) -> list[str]:
        """Apply the count and age limits; returns the names of the files deleted. A file
        that cannot be deleted is logged and kept (tried again on the next prune)."""
        now = self._wall()
        try:
            files = self.files()
        except OSError as exc:
            log.error("cannot list the snapshots in %s (%s): check its permissions and that the disk is "
                      "mounted read-write; expired snapshots stay until then", self.directory,
                      exc.strerror or exc)
            return []
        removed = []
        for index, path in enumerate(files):
            if index >= self.keep or self._too_old(path, now):
                error = self._unlink_quietly(path)
                if error is None:
                    removed.append(path.name)
        try:
            leftovers = list(self.directory.glob("*.jpg.tmp"))
        except OSError:
            leftovers = []  # the listing above worked, so this is a race with a vanishing folder
        for leftover in leftovers:
            self._unlink_quietly(leftover)  # a write cut short by a crash
        return removed

    def _unlink_quietly(self, path: Path) -> str | None:
        """Delete `path` (already gone is fine); the reason it failed, logged, or None."""
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            log.error("cannot delete the snapshot %s (%s): check the permissions of %s and that the disk "
                      "is mounted read-write", path.name, reason, self.directory)
            return reason
        return None

    def _too_old(self, path: Path, now: float) -> bool:
        if now < SANE_WALL:
            return False  # the clock is not set yet: no age can be judged
        try:
            mtime = path.stat().st_mtime
        except OSError:  # gone meanwhile, or unreadable: nothing to judge
            return False
        if mtime < SANE_WALL:
            try:
                os.utime(path, (now, now))  # written before the clock was set: its age starts now
            except OSError as exc:
                # A read-only disk: its age cannot be recorded, so it is judged again next
                # time (and kept meanwhile: never deleted on a guess).
                log.warning("cannot re-date the snapshot %s written before the clock was set (%s)",
                            path.name, exc.strerror or exc)
            return False
        return now - mtime > self.max_age_s

    def remove(self, names: list[str]) -> tuple[int, dict[str, str]]:
        """Delete these snapshot files (by name). Returns (how many were deleted, {name:
        reason} for each one that could not be); a file already gone is neither."""
        deleted, failed = 0, {}
        for name in names:
            if not _FILE.match(name):
                continue  # not a snapshot name: never a path outside the folder
            path = self.directory / name
            try:
                path.unlink()
                deleted += 1
            except FileNotFoundError:
                pass  # already gone: what was asked for
            except OSError as exc:
                failed[name] = exc.strerror or str(exc)
        return deleted, failed
