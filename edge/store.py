"""The durable store: one SQLite file (WAL) under the state directory.

Responsible for: the connection, versioned migrations of each component's tables (a
`Schema` declared beside the code that owns the tables: a worker's on its class, the audit
log's in edge.audit; the runtime and every CLI command that opens the store pass the same
list, so which tables exist never depends on what happened to be imported), a key/value
cache with TTL on monotonic time, and recent events. The audit
log (`edge.audit`) and the MQTT outbox keep their own tables here through migrations.
Events are kept for good: a few a day, and the doorbell's total_increasing counters
(rings, recognitions) are counted from them after a restart, so pruning them would need
those totals kept elsewhere first.

Durability: `journal_mode=WAL` with `synchronous=FULL`. Every commit syncs the WAL, so a
process crash (kill -9) loses nothing that was reported committed and a power cut loses at
most the transaction being written at that instant. FULL costs one fsync per commit; only
events (rings, visitors, door openings, job changes) are written, a few a day, so the cost
is negligible and it buys "a ring that was acknowledged is on disk". Periodic states are
kept in memory and never reach this file, which keeps an idle device's SD card quiet.

A full or read-only disk raises `StoreUnavailable`; the store marks itself degraded and the
caller (the ring path above all) carries on without it. So does a store locked by another
process (a backup tool, the sqlite3 shell holding BEGIN EXCLUSIVE): the runtime opens the
store with a short busy timeout, so a write gives up after a fraction of a second instead
of holding every caller behind it for ten; events that could not be recorded wait in memory
(`record_event`, counted in health) and are written, in order, once the store takes writes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import deque
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from edge.clock import SYSTEM_CLOCK, Clock

DB_NAME = "edge.sqlite3"
# How long a write waits for another process's lock: the CLI can wait; the runtime must not
# hold a ring behind a backup tool (edge.runtime passes RUNTIME_BUSY_TIMEOUT_S).
DEFAULT_BUSY_TIMEOUT_S = 10.0
RUNTIME_BUSY_TIMEOUT_S = 0.2
MAX_PENDING_EVENTS = 10_000


# Less free space than this under the state directory is a full disk: SQLite then often says
# only "disk I/O error" (it fails to grow the WAL or its shared-memory file).
FULL_DISK_BYTES = 1 << 20


def disk_problem(directory: Path) -> str | None:
    """"state disk is full: ..." when `directory`'s filesystem has (almost) no space left."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free < FULL_DISK_BYTES:
        return f"state disk is full ({free // 1024} KiB free): free space under {directory}"
    return None


class StoreUnavailable(Exception):
    """The state disk cannot take writes now (full, read-only, or corrupt)."""


@dataclass(frozen=True)
class Schema:
    """A component's tables, as an ordered list of SQL scripts (version 1, 2, ...).
    Append new scripts; never edit an applied one."""

    component: str
    scripts: tuple[str, ...]


CORE_SCHEMA = Schema("core", (
    """
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_wall REAL      -- NULL: never; wall-clock, checked with a monotonic guard
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts_wall REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_kind ON events(kind, id);
    """,
))


class Store:
    """`schemas`: the components' tables to migrate to (the core tables always). `readonly=True`
    opens an existing file for inspection (`edge audit verify`): no migrations, no
    journal-mode change, and every write fails with StoreUnavailable."""

    def __init__(self, path: Path, clock: Clock = SYSTEM_CLOCK,
                 on_health: Callable[[bool, str], None] | None = None, readonly: bool = False,
                 schemas: Iterable[Schema] = (), busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
        self.path = Path(path)
        self._clock = clock
        self._on_health = on_health
        self._lock = threading.RLock()
        self.healthy = True
        self.reason = ""
        self.failed_writes = 0
        self.commits = 0
        # A TTL must survive wall-clock jumps within a process: remember expiry on the
        # monotonic clock for values this process wrote; the stored wall expiry only matters
        # across restarts, where nothing better exists.
        self._mono_expiry: dict[str, float] = {}
        # Events that could not be written yet (the store locked or the disk full), oldest first.
        self._pending: deque[tuple[str, str, dict, float]] = deque()
        self.pending_dropped = 0
        if readonly:
            if not self.path.exists():
                raise StoreUnavailable(f"no store at {self.path}")
            target = f"file:{self.path}?mode=ro"
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        self._conn = sqlite3.connect(target, uri=readonly, check_same_thread=False, isolation_level=None,
                                     timeout=busy_timeout_s)
        self._conn.row_factory = sqlite3.Row
        if not readonly:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.migrate(schemas)

    # -- plumbing -----------------------------------------------------------------------
    def migrate(self, schemas: Iterable[Schema] = ()) -> list[tuple[str, int]]:
        """Apply the scripts of `schemas` (and the core's) not applied yet; returns them."""
        applied: list[tuple[str, int]] = []
        by_component = {CORE_SCHEMA.component: CORE_SCHEMA}
        for schema in schemas:
            known = by_component.setdefault(schema.component, schema)
            if known.scripts != schema.scripts:
                raise ValueError(f"two different schemas for the store component {schema.component!r}")
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                               "component TEXT, version INTEGER, applied_wall REAL, "
                               "PRIMARY KEY (component, version))")
            done = {(r[0], r[1]) for r in self._conn.execute("SELECT component, version FROM schema_migrations")}
            for component, schema in sorted(by_component.items(), key=lambda kv: (kv[0] != "core", kv[0])):
                for version, sql in enumerate(schema.scripts, start=1):
                    if (component, version) in done:
                        continue
                    # executescript commits implicitly; wrap the script and its record in one transaction
                    self._conn.executescript(
                        "BEGIN;\n" + sql + f"\nINSERT INTO schema_migrations VALUES "
                        f"('{component}', {version}, {time.time()});\nCOMMIT;")
                    applied.append((component, version))
        return applied

    def _degrade(self, exc: sqlite3.Error) -> StoreUnavailable:
        message = str(exc)
        full = disk_problem(self.path.parent)
        if full and ("full" in message or "I/O" in message):
            reason = "state disk is full: free space under the state directory"
        elif "locked" in message or "busy" in message:
            reason = ("the store is locked by another process (a backup tool or an sqlite3 shell?); "
                      "events wait in memory until it lets go")
        elif "full" in message:
            reason = "state disk is full: free space under the state directory"
        elif "readonly" in message or "read-only" in message:
            reason = "state disk is read-only: check the SD card and remount read-write"
        else:
            reason = f"store write failed: {message}"
        return self.degrade(reason)

    def degrade(self, reason: str) -> StoreUnavailable:
        """Mark the store degraded for a write problem found outside SQLite (e.g. the audit
        anchor file); the next successful commit clears it. Returns the exception to raise,
        for callers that must."""
        with self._lock:
            self.failed_writes += 1
            if self._pending:
                reason += f"; {len(self._pending)} event(s) wait in memory to be recorded"
            if self.pending_dropped:
                reason += (f"; {self.pending_dropped} event(s) lost: more than {MAX_PENDING_EVENTS} "
                           "waited in memory")
            changed = self.healthy or reason != self.reason
            self.healthy, self.reason = False, reason
        if changed and self._on_health:
            self._on_health(False, reason)
        return StoreUnavailable(reason)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's lock across a write and what must follow it in the same order
        (the audit anchor): no other thread of this process writes in between."""
        with self._lock:
            yield

    def _recovered(self) -> None:
        if self._pending:
            return  # not well until what waits in memory is written (flush_pending)
        if not self.healthy:
            self.healthy, self.reason = True, ""
            if self._on_health:
                self._on_health(True, "")

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `fn(conn)` in one transaction; raises StoreUnavailable on a disk problem."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self._conn)
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise self._degrade(exc) from exc
            self.commits += 1
            self._recovered()
            return result

    def read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def counters(self) -> dict[str, int]:
        """SQLite's own view of what this connection changed (for the idle-writes benchmark),
        and the events waiting in memory or lost while the disk refused them (for metrics)."""
        with self._lock:
            return {"commits": self.commits, "total_changes": self._conn.total_changes,
                    "failed_writes": self.failed_writes, "pending_events": len(self._pending),
                    "pending_dropped": self.pending_dropped}

    # -- key/value cache ------------------------------------------------------------------
    def kv_set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        expires = self._clock.wall() + ttl_s if ttl_s is not None else None
        self.write(lambda c: c.execute("INSERT INTO kv(key, value, expires_wall) VALUES (?, ?, ?) "
                                       "ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                                       "expires_wall=excluded.expires_wall",
                                       (key, json.dumps(value), expires)))
        with self._lock:
            if ttl_s is None:
                self._mono_expiry.pop(key, None)
            else:
                self._mono_expiry[key] = self._clock.monotonic() + ttl_s

    def kv_get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            rows = self._conn.execute("SELECT value, expires_wall FROM kv WHERE key=?", (key,)).fetchall()
            if not rows:
                return default
            mono_expiry = self._mono_expiry.get(key)
        if mono_expiry is not None:
            expired = self._clock.monotonic() >= mono_expiry
        else:
            expires = rows[0]["expires_wall"]
            expired = expires is not None and self._clock.wall() >= expires
        return default if expired else json.loads(rows[0]["value"])

    # -- events ----------------------------------------------------------------------------
    def record_event(self, event_id: str, kind: str, data: dict, ts_wall: float | None = None) -> int:
        """Write an event now; its row id, or StoreUnavailable (see `keep_event`)."""
        ts = self._clock.wall() if ts_wall is None else ts_wall
        return self.write(lambda c: c.execute(
            "INSERT INTO events(event_id, kind, ts_wall, data) VALUES (?, ?, ?, ?)",
            (event_id, kind, ts, json.dumps(data, separators=(",", ":")))).lastrowid)

    def keep_event(self, event_id: str, kind: str, data: dict, ts_wall: float | None = None) -> None:
        """Record an event that must not be lost (a ring): written now, or, when the store
        cannot take it (locked, full, read-only), kept in memory (at most MAX_PENDING_EVENTS;
        beyond, the oldest is dropped and counted) and written, in order, by the next
        `flush_pending` that works (the runtime calls it every tick). Never raises."""
        ts = self._clock.wall() if ts_wall is None else ts_wall
        with self._lock:
            if len(self._pending) >= MAX_PENDING_EVENTS:
                self._pending.popleft()
                self.pending_dropped += 1
            self._pending.append((event_id, kind, data, ts))
        self.flush_pending()

    def flush_pending(self) -> int:
        """Write the events waiting in memory; returns how many are still waiting."""
        with self._lock:
            if not self._pending:
                return 0
            batch = list(self._pending)

            def insert(c: sqlite3.Connection) -> None:
                c.executemany("INSERT INTO events(event_id, kind, ts_wall, data) VALUES (?, ?, ?, ?)",
                              [(e, k, ts, json.dumps(d, separators=(",", ":"))) for e, k, d, ts in batch])
            try:
                self.write(insert)
            except StoreUnavailable:  # degraded by write(), the waiting events counted in the reason
                return len(self._pending)
            for _ in batch:
                self._pending.popleft()
            self._recovered()
            return 0

    @property
    def pending_events(self) -> int:
        with self._lock:
            return len(self._pending)

    def recent_events(self, kind: str | None = None, limit: int = 50) -> list[dict]:
        if kind:
            rows = self.read("SELECT * FROM events WHERE kind=? ORDER BY id DESC LIMIT ?", (kind, limit))
        else:
            rows = self.read("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": r["id"], "event_id": r["event_id"], "kind": r["kind"], "ts_wall": r["ts_wall"],
                 "data": json.loads(r["data"])} for r in rows]

    def integrity_check(self) -> str:
        return self.read("PRAGMA integrity_check")[0][0]
