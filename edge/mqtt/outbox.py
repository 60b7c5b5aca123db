# About 600 lines, in one file on purpose: the durable store, its in-memory stand-in and the
# facade that moves messages between them share one set of rules (order, cap, coalescing,
# TTL, in flight); each part read alone would send the reader to the others for every rule.
"""Store-and-forward for events: the outbox that loses nothing while the broker is away.

Contract (the same for the durable `OutboxStore` and the in-memory `MemoryOutbox`):

- `append(messages)` → ids, in one transaction; an id is never reused, so ids are the order.
  `append(messages, sent=True)` writes messages already handed to the broker (in flight at
  once, as if marked). The caller does so only when nothing unsent is waiting, so in-flight
  rows stay the oldest; should unsent ones wait all the same (rows it could not know of: a
  store that opened late, with what an earlier process left), the new ones count as unsent
  too and go again after them: a duplicate, never a loss.
- `peek(limit)`: the oldest messages not yet handed to the broker, in order.
- `mark_inflight(ids)`: these were handed to the broker; `peek` moves past them. Marked on
  disk too (`inflight`, `attempts`), for the record: what was in flight at a crash.
- `ack(ids)`: the broker's PUBACK arrived; the rows are deleted. Only an ack deletes.
- `release_inflight()`: a new connection client starts from scratch (a worker restart, or a
  process start after a crash): every unacknowledged message is sent again, in order. So a
  message whose PUBACK was lost is sent twice; the only other duplicate is the one above.
- Coalescing: a message with a `coalesce_key` replaces a not-yet-sent message with the same
  key (it moves to the end, as the newest); one already in flight is left alone.
- Classes: `keep` messages (rings, door openings: kinds the bus never drops) have no TTL and
  are dropped only when the byte cap cannot be met otherwise; ordinary ones expire after the
  TTL and are evicted first.
- Byte cap (topic + payload bytes), TTL on monotonic time, drops counted by reason and class.
  Monotonic time restarts at boot, so a message from an earlier boot starts its TTL again
  when the outbox is opened: it can live longer than the TTL, never shorter (a Pi without a
  real-time clock has no trustworthy wall time to do better).

Durability: rows live in the store's SQLite file (WAL, synchronous=FULL, see `edge.store`),
so an appended event survives kill -9; a power cut can lose at most the transaction being
written. `Outbox` puts the two together: disk when the store works, memory while it refuses
writes (the device degrades, it does not stop), and back to disk, in order, when it recovers.

Not responsible for: what a message says, or talking to the broker (`edge.mqtt.link`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from edge.clock import SYSTEM_CLOCK, Clock
from edge.store import Schema, Store, StoreUnavailable

log = logging.getLogger("edge.mqtt.outbox")

OUTBOX_SCHEMA = Schema("outbox", (
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused, so they are the order
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        keep INTEGER NOT NULL,                 -- 1: never dropped before the byte cap, no TTL
        coalesce_key TEXT,                     -- a newer message with the same key replaces an unsent one
        event_id TEXT,
        size INTEGER NOT NULL,                 -- bytes counted against the cap: topic + payload
        created_wall REAL NOT NULL,            -- for people only
        created_mono REAL NOT NULL,            -- TTL clock, valid within boot_id
        boot_id TEXT NOT NULL,
        inflight INTEGER NOT NULL DEFAULT 0,   -- handed to the broker, PUBACK not yet seen
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_coalesce ON outbox(coalesce_key) WHERE coalesce_key IS NOT NULL;
    """,
))

KEEP, NORMAL = "keep", "normal"


def current_boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Outgoing:
    """A message to append."""

    topic: str
    payload: bytes
    keep: bool = False
    coalesce_key: str | None = None
    event_id: str | None = None
    qos: int = 1

    @property
    def size(self) -> int:
        return len(self.topic.encode()) + len(self.payload)


@dataclass(frozen=True)
class Queued:
    """A message in an outbox; `key` names it across both backends."""

    id: int
    topic: str
    payload: bytes
    qos: int
    keep: bool
    coalesce_key: str | None
    event_id: str | None
    source: str

    @property
    def key(self) -> tuple[str, int]:
        return self.source, self.id

    def outgoing(self) -> Outgoing:
        return Outgoing(self.topic, self.payload, self.keep, self.coalesce_key, self.event_id, self.qos)


class OutboxStore:
    """The durable outbox, a table in the store (see the module docstring for the contract).
    Raises StoreUnavailable from `append` when the disk refuses the write."""

    source = "disk"

    def __init__(self, store: Store, clock: Clock = SYSTEM_CLOCK, max_bytes: int = 16 * 2**20,
                 ttl_s: float = 7 * 86400.0, boot_id: str | None = None):
        self._store = store
        self._clock = clock
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._boot = boot_id or current_boot_id()
        self._lock = threading.RLock()
        self._cursor = 0            # highest id handed to the broker by this client
        self._unacked_deletes: set[int] = set()  # acked, but the disk refused the delete
        self.drops: Counter[tuple[str, str]] = Counter()  # (reason, class)
        self.coalesced = 0
        self.redelivered_at_open = self._open()
        self._bytes = int(store.read("SELECT COALESCE(SUM(size), 0) FROM outbox")[0][0])

    def _open(self) -> int:
        """Rows of an earlier boot restart their TTL clock; rows in flight at a crash go back
        to pending. Reads first, so an idle start writes nothing."""
        stale = self._store.read("SELECT COUNT(*) FROM outbox WHERE boot_id != ? OR inflight = 1", (self._boot,))
        if not stale[0][0]:
            return 0
        now = self._clock.monotonic()

        def tx(c: sqlite3.Connection) -> int:
            c.execute("UPDATE outbox SET created_mono = ?, boot_id = ? WHERE boot_id != ?",
                      (now, self._boot, self._boot))
            return c.execute("UPDATE outbox SET inflight = 0 WHERE inflight = 1").rowcount
        return self._store.write(tx)

    # -- writes ---------------------------------------------------------------------------
    def append(self, messages: Iterable[Outgoing], sent: bool = False) -> list[int]:
        messages = list(messages)
        now_mono, now_wall = self._clock.monotonic(), self._clock.wall()
        with self._lock:
            drops: Counter[tuple[str, str]] = Counter()
            stats = {"bytes": self._bytes, "coalesced": 0}
            cursor = self._cursor

            def tx(c: sqlite3.Connection) -> list[int]:
                # Rows up to the cursor are in flight. Rows sent already move it past
                # themselves, unless unsent rows wait before them: rows the forwarder did not
                # write (a store that opened late, with what an earlier process left unsent).
                # Then the sent rows stay behind the cursor too and go out again after those
                # (a duplicate, never a loss).
                unsent_before = sent and c.execute("SELECT 1 FROM outbox WHERE id > ? LIMIT 1",
                                                   (cursor,)).fetchone() is not None
                ids = []
                for m in messages:
                    if m.size > self.max_bytes:
                        drops["too_large", KEEP if m.keep else NORMAL] += 1
                        log.error("event %s of %d bytes is larger than the whole outbox (%d bytes): dropped",
                                  m.event_id, m.size, self.max_bytes)
                        continue
                    if m.coalesce_key is not None:
                        for row in c.execute("SELECT id, size FROM outbox WHERE coalesce_key = ? AND id > ?",
                                             (m.coalesce_key, self._cursor)).fetchall():
                            c.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
                            stats["bytes"] -= row[1]
                            stats["coalesced"] += 1
                    ids.append(c.execute(
                        "INSERT INTO outbox(topic, payload, qos, keep, coalesce_key, event_id, size, created_wall, "
                        "created_mono, boot_id, inflight, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (m.topic, m.payload, m.qos, int(m.keep), m.coalesce_key, m.event_id, m.size, now_wall,
                         now_mono, self._boot, int(sent), int(sent))).lastrowid)
                    stats["bytes"] += m.size
                if sent and ids and not unsent_before:
                    self._cursor = max(cursor, max(ids))  # before evicting: rows in flight are the broker's
                if stats["bytes"] > self.max_bytes:
                    stats["bytes"] -= self._evict(c, stats["bytes"] - self.max_bytes, now_mono, drops)
                return ids

            try:
                ids = self._store.write(tx)
            except BaseException:
                self._cursor = cursor
                raise
            self._bytes = stats["bytes"]
            self.coalesced += stats["coalesced"]
            self.drops.update(drops)
            return ids

    def _evict(self, c: sqlite3.Connection, excess: int, now: float, drops: Counter) -> int:
        """Free `excess` bytes from unsent rows: expired ordinary ones, then the oldest
        ordinary ones, then the oldest kept ones. Rows in flight are the broker's now."""
        freed = self._delete_expired(c, now, drops)
        if freed >= excess:
            return freed
        rows = c.execute("SELECT id, size, keep FROM outbox WHERE id > ? ORDER BY keep, id",
                         (self._cursor,)).fetchall()
        doomed = []
        for row in rows:
            if freed >= excess:
                break
            doomed.append(row[0])
            freed += row[1]
            drops["cap", KEEP if row[2] else NORMAL] += 1
        for chunk in _chunks(doomed):
            c.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        if doomed:
            log.error("outbox over its %d-byte cap: dropped the %d oldest unsent events", self.max_bytes, len(doomed))
        return freed

    def _delete_expired(self, c: sqlite3.Connection, now: float, drops: Counter) -> int:
        rows = c.execute("SELECT id, size FROM outbox WHERE keep = 0 AND id > ? AND created_mono <= ?",
                         (self._cursor, now - self.ttl_s)).fetchall()
        for chunk in _chunks([r[0] for r in rows]):
            c.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        if rows:
            drops["ttl", NORMAL] += len(rows)
            log.warning("dropped %d unsent events older than %gs", len(rows), self.ttl_s)
        return sum(r[1] for r in rows)

    def expire(self) -> int:
        """Drop unsent ordinary messages older than the TTL; returns how many. Writes only
        when something expired."""
        now = self._clock.monotonic()
        with self._lock:
            if not self._store.read("SELECT 1 FROM outbox WHERE keep = 0 AND id > ? AND created_mono <= ? LIMIT 1",
                                    (self._cursor, now - self.ttl_s)):
                return 0
            drops: Counter[tuple[str, str]] = Counter()
            freed = self._store.write(lambda c: self._delete_expired(c, now, drops))
            self._bytes -= freed
            self.drops.update(drops)
            return sum(drops.values())

    def mark_inflight(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._cursor = max(self._cursor, max(ids))
            try:  # advisory: the cursor above is what keeps them from being sent twice
                self._store.write(lambda c: [c.execute(
                    f"UPDATE outbox SET inflight = 1, attempts = attempts + 1 WHERE id IN ({','.join('?' * len(ch))})",
                    ch) for ch in _chunks(ids)])
            except (StoreUnavailable, sqlite3.Error) as exc:
                log.warning("could not mark %d events in flight (%s); they are still tracked in memory", len(ids), exc)

    def ack(self, ids: Iterable[int]) -> int:
        with self._lock:
            ids = list(self._unacked_deletes | set(ids))
            if not ids:
                return 0

            def tx(c: sqlite3.Connection) -> int:
                freed = 0
                for ch in _chunks(ids):
                    marks = ",".join("?" * len(ch))
                    freed += c.execute(f"SELECT COALESCE(SUM(size), 0) FROM outbox WHERE id IN ({marks})",
                                       ch).fetchone()[0]
                    c.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ch)
                return freed
            try:
                self._bytes -= self._store.write(tx)
                self._unacked_deletes.clear()
            except StoreUnavailable:
                # Still past the cursor, so not sent again in this run; after a restart they
                # would be (a duplicate, never a loss).
                self._unacked_deletes.update(ids)
            return len(ids)

    def release_inflight(self) -> None:
        with self._lock:
            self._cursor = 0
            self._unacked_deletes.clear()
            if self._store.read("SELECT 1 FROM outbox WHERE inflight = 1 LIMIT 1"):
                try:
                    self._store.write(lambda c: c.execute("UPDATE outbox SET inflight = 0 WHERE inflight = 1"))
                except StoreUnavailable:
                    pass

    # -- reads ------------------------------------------------------------------------------
    def peek(self, limit: int) -> list[Queued]:
        with self._lock:
            rows = self._store.read("SELECT id, topic, payload, qos, keep, coalesce_key, event_id "
                                    "FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (self._cursor, limit))
        return [Queued(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6], self.source) for r in rows]

    def pending(self) -> int:
        with self._lock:
            return int(self._store.read("SELECT COUNT(*) FROM outbox WHERE id > ?", (self._cursor,))[0][0])

    def inflight(self) -> int:
        with self._lock:
            return int(self._store.read("SELECT COUNT(*) FROM outbox WHERE id <= ?", (self._cursor,))[0][0])

    @property
    def bytes(self) -> int:
        return self._bytes


class MemoryOutbox:
    """The same contract in memory: used when there is no store, and as the spill while the
    disk refuses writes. Lost with the process."""

    source = "memory"

    def __init__(self, clock: Clock = SYSTEM_CLOCK, max_bytes: int = 16 * 2**20, ttl_s: float = 7 * 86400.0):
        self._clock = clock
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._lock = threading.RLock()
        self._rows: OrderedDict[int, tuple[Queued, float, int]] = OrderedDict()  # id -> (row, created_mono, size)
        self._ids = itertools.count(1)
        self._cursor = 0
        self._bytes = 0
        self.drops: Counter[tuple[str, str]] = Counter()
        self.coalesced = 0
        self.redelivered_at_open = 0

    def append(self, messages: Iterable[Outgoing], sent: bool = False) -> list[int]:
        ids = []
        now = self._clock.monotonic()
        with self._lock:
            unsent_before = bool(self._rows) and next(reversed(self._rows)) > self._cursor  # as OutboxStore.append
            for m in messages:
                klass = KEEP if m.keep else NORMAL
                if m.size > self.max_bytes:
                    self.drops["too_large", klass] += 1
                    continue
                if m.coalesce_key is not None:
                    for rid, (row, _, size) in list(self._rows.items()):
                        if rid > self._cursor and row.coalesce_key == m.coalesce_key:
                            del self._rows[rid]
                            self._bytes -= size
                            self.coalesced += 1
                rid = next(self._ids)
                self._rows[rid] = (Queued(rid, m.topic, m.payload, m.qos, m.keep, m.coalesce_key, m.event_id,
                                          self.source), now, m.size)
                self._bytes += m.size
                ids.append(rid)
            if sent and ids and not unsent_before:
                self._cursor = max(self._cursor, max(ids))
            if self._bytes > self.max_bytes:
                self._evict(now)
        return ids

    def _evict(self, now: float) -> None:
        self.expire()
        unsent = [(row.keep, rid) for rid, (row, _, _) in self._rows.items() if rid > self._cursor]
        for keep, rid in sorted(unsent):
            if self._bytes <= self.max_bytes:
                break
            self._bytes -= self._rows.pop(rid)[2]
            self.drops["cap", KEEP if keep else NORMAL] += 1

    def expire(self) -> int:
        limit = self._clock.monotonic() - self.ttl_s
        with self._lock:
            old = [rid for rid, (row, created, _) in self._rows.items()
                   if rid > self._cursor and not row.keep and created <= limit]
            for rid in old:
                self._bytes -= self._rows.pop(rid)[2]
            if old:
                self.drops["ttl", NORMAL] += len(old)
            return len(old)

    def mark_inflight(self, ids: list[int]) -> None:
        with self._lock:
            if ids:
                self._cursor = max(self._cursor, max(ids))

    def ack(self, ids: Iterable[int]) -> int:
        n = 0
        with self._lock:
            for rid in ids:
                entry = self._rows.pop(rid, None)
                if entry is not None:
                    self._bytes -= entry[2]
                    n += 1
        return n

    def release_inflight(self) -> None:
        with self._lock:
            self._cursor = 0

    def peek(self, limit: int) -> list[Queued]:
        with self._lock:
            return list(itertools.islice((row for rid, (row, _, _) in self._rows.items() if rid > self._cursor), limit))

    def take_unsent(self) -> list[Queued]:
        """Remove and return every message not in flight (moving them back to disk)."""
        with self._lock:
            rows = [row for rid, (row, _, _) in self._rows.items() if rid > self._cursor]
            for row in rows:
                self._bytes -= self._rows.pop(row.id)[2]
            return rows

    def put_back(self, rows: list[Queued]) -> None:
        """Undo `take_unsent` when the disk refused them again (same ids, same order)."""
        now = self._clock.monotonic()
        with self._lock:
            for row in rows:
                self._rows[row.id] = (row, now, row.outgoing().size)
                self._bytes += row.outgoing().size
            self._rows = OrderedDict(sorted(self._rows.items()))

    def pending(self) -> int:
        with self._lock:
            return sum(1 for rid in self._rows if rid > self._cursor)

    def inflight(self) -> int:
        with self._lock:
            return sum(1 for rid in self._rows if rid <= self._cursor)

    @property
    def bytes(self) -> int:
        return self._bytes


class Outbox:
    """What the link uses: the durable outbox while the disk works, memory while it refuses
    writes, and back to disk (oldest first) once it takes them again. Unsent disk rows are
    always older than unsent memory rows, so `peek` returns disk rows first."""

    def __init__(self, durable: OutboxStore | None, memory: MemoryOutbox):
        self.durable = durable
        self.memory = memory
        self.spilling = False  # memory holds unsent rows because the disk refused them
        self.spill_reason = ""
        # Rows move between memory and disk only under this lock, and so does the choice of
        # where a write goes (`append`, `attach`); `handing` holds it too.
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def handing(self) -> Iterator[None]:
        """Hold from `peek` until `mark_inflight` while the rows read are handed to the
        broker: a row moved to disk meanwhile would take a new key, so its PUBACK would not
        find it and it would be sent again, after later ones."""
        with self._lock:
            yield

    @classmethod
    def open(cls, store: Store | None, clock: Clock, max_bytes: int, ttl_s: float) -> "Outbox":
        memory = MemoryOutbox(clock, max_bytes, ttl_s)
        if store is None:
            return cls(None, memory)
        try:
            return cls(OutboxStore(store, clock, max_bytes, ttl_s), memory)
        except (StoreUnavailable, sqlite3.Error) as exc:
            log.error("outbox cannot use the store (%s): events are kept in memory only", exc)
            return cls(None, memory)

    def attach(self, store: Store, clock: Clock, max_bytes: int, ttl_s: float) -> bool:
        """Use a store that opened late (the disk was full or read-only at boot): what waits
        in memory moves to disk, in order, with the next append. True when attached."""
        try:
            durable = OutboxStore(store, clock, max_bytes, ttl_s)
        except (StoreUnavailable, sqlite3.Error) as exc:
            log.error("outbox still cannot use the store (%s)", exc)
            return False
        with self._lock:
            self.durable = durable
            self.spilling, self.spill_reason = bool(self.memory.pending()), "the store opened late"
        log.warning("the store is back: the outbox keeps events on disk again")
        return True

    @property
    def max_bytes(self) -> int:
        """The byte cap; a message larger than it is never kept."""
        return self.memory.max_bytes

    @property
    def degraded(self) -> str | None:
        """Why events are not durable right now, or None."""
        if self.durable is None:
            return "no store: unsent events are kept in memory and lost if the process dies"
        if self.spilling:
            return f"the store refuses writes ({self.spill_reason}): unsent events are kept in memory"
        return None

    def append(self, messages: list[Outgoing], sent: bool = False) -> list[Queued]:
        """The rows written for `messages`, in order (on disk, or in memory while it refuses);
        `sent`: they were handed to the broker already (see the contract)."""
        with self._lock:
            return self._append(messages, sent)

    def _append(self, messages: list[Outgoing], sent: bool) -> list[Queued]:
        if self.durable is not None:
            moving = self.memory.take_unsent() if self.spilling and not sent else []
            try:
                ids = self.durable.append([r.outgoing() for r in moving] + messages, sent)
                if self.spilling:
                    log.warning("store writable again: %d events moved from memory back to the outbox", len(moving))
                self.spilling = False
                return _queued(messages, ids[len(moving):], self.durable)
            except (StoreUnavailable, sqlite3.Error) as exc:
                self.memory.put_back(moving)
                if not self.spilling:
                    log.error("outbox cannot write to the store (%s): keeping events in memory until it can", exc)
                self.spilling, self.spill_reason = True, str(exc)
            except BaseException:  # not a disk refusing: the caller hears of it, the rows stay
                self.memory.put_back(moving)
                raise
        return _queued(messages, self.memory.append(messages, sent), self.memory)

    def _backends(self):
        return [b for b in (self.durable, self.memory) if b is not None]

    def peek(self, limit: int) -> list[Queued]:
        """The oldest unsent rows, disk first. A failed disk read raises (sqlite3.Error): the
        rows behind it are older than any in memory, and a short answer would look drained."""
        rows: list[Queued] = []
        for backend in self._backends():
            if len(rows) >= limit:
                break
            rows += backend.peek(limit - len(rows))
        return rows

    def _split(self, keys: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"disk": [], "memory": []}
        for source, rid in keys:
            out[source].append(rid)
        return out

    def mark_inflight(self, rows: list[Queued]) -> None:
        split = self._split(r.key for r in rows)
        if self.durable is not None and split["disk"]:
            self.durable.mark_inflight(split["disk"])
        self.memory.mark_inflight(split["memory"])

    def ack(self, keys: Iterable[tuple[str, int]]) -> None:
        split = self._split(keys)
        if self.durable is not None and split["disk"]:
            try:
                self.durable.ack(split["disk"])
            except sqlite3.Error as exc:
                log.error("outbox ack failed: %s", exc)
        self.memory.ack(split["memory"])

    def release_inflight(self) -> None:
        for backend in self._backends():
            try:
                backend.release_inflight()
            except sqlite3.Error as exc:
                log.error("outbox release failed: %s", exc)

    def expire(self) -> int:
        n = 0
        for backend in self._backends():
            try:
                n += backend.expire()
            except (StoreUnavailable, sqlite3.Error) as exc:
                log.error("outbox expiry failed: %s", exc)
        return n

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "inflight": 0, "bytes": 0}
        for backend in self._backends():
            try:
                out["pending"] += backend.pending()
                out["inflight"] += backend.inflight()
                out["bytes"] += backend.bytes
            except sqlite3.Error:
                pass
        return out

    @property
    def coalesced(self) -> int:
        """Unsent events replaced by a newer one with the same coalescing key."""
        return sum(b.coalesced for b in self._backends())

    def drops(self) -> Counter[tuple[str, str]]:
        total: Counter[tuple[str, str]] = Counter()
        for backend in self._backends():
            total.update(backend.drops)
        return total


def _queued(messages: list[Outgoing], ids: list[int], backend: OutboxStore | MemoryOutbox) -> list[Queued]:
    """Queued rows for appended messages; one too large for the outbox got no id (dropped)."""
    kept = [m for m in messages if m.size <= backend.max_bytes]
    return [Queued(i, m.topic, m.payload, m.qos, m.keep, m.coalesce_key, m.event_id, backend.source)
            for i, m in zip(ids, kept)]


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]
