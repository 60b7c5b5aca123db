"""Print jobs: a G-code file from the job folder streamed to the sender, its progress, and
its checkpoints in the store.

- `scan()` reads a file once before it is printed: it counts the commands (progress by
  lines) and refuses a file with a line the firmware could not take (too long, not ASCII),
  naming the line, before anything reaches the printer.
- `ReadAhead` reads the file on a thread of its own into a bounded queue, so the sender's
  thread never touches the disk (issue 12: file parsing must not stall the link).
- `JobStore` keeps one row per job (`printer_jobs`, a `Schema` migrated by the runtime):
  state changes are written when they happen; the position within the file (last line the
  firmware acknowledged, its byte offset, temperatures, position when known) at a bounded
  rate while printing and at once when the job pauses, stops or is interrupted. A job found
  `printing` or `paused` when the worker starts was cut off by a restart of the runtime: it
  becomes `interrupted` at its last checkpoint, and is only resumed when someone asks.

Not responsible for: the protocol (sender.py), what the states mean to Home Assistant and
when a job starts, pauses or resumes (worker.py).
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.store import Schema, Store
from services.printer import marlin
from services.printer.sender import END, JobLine

JOB_SUFFIXES = (".gcode", ".gco", ".g")
READ_AHEAD_LINES = 512

PRINTING, PAUSED, INTERRUPTED, FINISHED, FAILED, CANCELLED = (
    "printing", "paused", "interrupted", "finished", "failed", "cancelled")
ACTIVE = (PRINTING, PAUSED)
OPEN = (PRINTING, PAUSED, INTERRUPTED)  # a job that still needs a decision

JOBS_SCHEMA = Schema("printer", (
    """
    CREATE TABLE printer_jobs (
        id INTEGER PRIMARY KEY,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        total_lines INTEGER NOT NULL,   -- commands in the file
        state TEXT NOT NULL,            -- printing, paused, interrupted, finished, failed, cancelled
        started_wall REAL NOT NULL,
        ended_wall REAL,
        line INTEGER NOT NULL DEFAULT 0,        -- last file line the firmware acknowledged (1-based)
        byte_offset INTEGER NOT NULL DEFAULT 0, -- just after that line
        lines_done INTEGER NOT NULL DEFAULT 0,  -- commands acknowledged
        print_s REAL NOT NULL DEFAULT 0,        -- time spent printing (pauses excluded)
        temps TEXT,                              -- {"T": [actual, target], "B": [...]}
        position TEXT,                           -- {"X": .., "Y": .., "Z": .., "E": ..} when known
        reason TEXT,
        checkpoint_wall REAL
    );
    CREATE INDEX printer_jobs_state ON printer_jobs(state);
    """,
))


class JobRejected(ValueError):
    """A job that cannot start: an unknown file, a line the firmware cannot take, a busy printer."""


@dataclass(frozen=True)
class FileScan:
    path: Path
    size: int
    total_lines: int


def job_path(jobs_dir: Path, name: str) -> Path:
    """The file `name` in the job folder; JobRejected with the reason when it is not one."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise JobRejected(f"{name!r} is not a file name in the job folder (no paths)")
    if not name.lower().endswith(JOB_SUFFIXES):
        raise JobRejected(f"{name!r} is not a G-code file (expected {', '.join(JOB_SUFFIXES)})")
    path = jobs_dir / name
    if not path.is_file():
        known = sorted(p.name for p in jobs_dir.glob("*") if p.suffix.lower() in JOB_SUFFIXES)[:10] \
            if jobs_dir.is_dir() else []
        raise JobRejected(f"no file {name!r} in the job folder {jobs_dir}; known: {', '.join(known) or 'none'} "
                          f"(copy one with `edge printer print FILE`)")
    return path


def scan(path: Path, max_line: int = marlin.MAX_LINE_BYTES) -> FileScan:
    total = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
            command = marlin.strip_comment(text)
            if not command:
                continue
            try:
                marlin.check_command(command, max_line)
            except ValueError as exc:
                raise JobRejected(f"{path.name} line {number}: {exc}") from None
            total += 1
    return FileScan(path, path.stat().st_size, total)


class ReadAhead:
    """The lines of a job file after `start_offset`, read on a thread into a bounded queue;
    `take()` never blocks (the sender's side of `Feed`)."""

    def __init__(self, path: Path, start_offset: int = 0, start_line: int = 0, size: int = READ_AHEAD_LINES):
        self.path = path
        self._queue: queue.Queue[JobLine] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._start = (start_offset, start_line)
        self.error: str | None = None
        self._thread = threading.Thread(target=self._read, name="printer-read-ahead", daemon=True)
        self._thread.start()

    def take(self) -> JobLine | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _put(self, item: JobLine) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        offset, number = self._start
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                for raw in f:
                    offset += len(raw)
                    number += 1
                    command = marlin.strip_comment(raw.decode("ascii", "replace"))
                    if command and not self._put(JobLine(number, offset, command)):
                        return
        except OSError as exc:  # the file vanished or the disk failed: the job stops where it is
            self.error = f"reading {self.path.name} failed: {exc}"
        self._put(END)


@dataclass
class JobRecord:
    id: int
    file: str
    size: int
    total_lines: int
    state: str
    started_wall: float
    ended_wall: float | None = None
    line: int = 0
    byte_offset: int = 0
    lines_done: int = 0
    print_s: float = 0.0
    temps: dict | None = None
    position: dict | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "file": self.file, "state": self.state, "line": self.line,
                "total_lines": self.total_lines, "byte_offset": self.byte_offset, "size": self.size,
                "lines_done": self.lines_done, "print_s": round(self.print_s, 1), "reason": self.reason,
                "started_wall": self.started_wall, "ended_wall": self.ended_wall, "temps": self.temps,
                "position": self.position}


class JobStore:
    def __init__(self, store: Store):
        self.store = store

    def create(self, file: str, size: int, total: int, wall: float) -> JobRecord:
        job_id = self.store.write(lambda c: c.execute(
            "INSERT INTO printer_jobs(file, size, total_lines, state, started_wall) VALUES (?, ?, ?, ?, ?)",
            (file, size, total, PRINTING, wall)).lastrowid)
        return JobRecord(job_id, file, size, total, PRINTING, wall)

    def save(self, job: JobRecord, wall: float) -> None:
        """The job's state and checkpoint, in one transaction."""
        self.store.write(lambda c: c.execute(
            "UPDATE printer_jobs SET state=?, ended_wall=?, line=?, byte_offset=?, lines_done=?, print_s=?, "
            "temps=?, position=?, reason=?, checkpoint_wall=? WHERE id=?",
            (job.state, job.ended_wall, job.line, job.byte_offset, job.lines_done, job.print_s,
             json.dumps(job.temps) if job.temps else None, json.dumps(job.position) if job.position else None,
             job.reason, wall, job.id)))

    def open_job(self) -> JobRecord | None:
        """The newest job still printing, paused or interrupted."""
        rows = self.store.read(f"SELECT * FROM printer_jobs WHERE state IN ({','.join('?' * len(OPEN))}) "
                               f"ORDER BY id DESC LIMIT 1", OPEN)
        return _record(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[JobRecord]:
        return [_record(r) for r in self.store.read("SELECT * FROM printer_jobs ORDER BY id DESC LIMIT ?", (limit,))]


def _record(row) -> JobRecord:
    return JobRecord(row["id"], row["file"], row["size"], row["total_lines"], row["state"], row["started_wall"],
                     row["ended_wall"], row["line"], row["byte_offset"], row["lines_done"], row["print_s"],
                     json.loads(row["temps"]) if row["temps"] else None,
                     json.loads(row["position"]) if row["position"] else None, row["reason"])
