"""Hash-chained, keyed audit log of security-relevant actions (door openings, enrolments,
config changes, remote commands).

Each record's MAC is HMAC-SHA256(key, previous MAC + the record's canonical JSON), with the
key in a file beside the database (not inside it), so someone who can edit the database
cannot re-hash the chain after changing a record. The newest record's sequence number and
MAC are also written to an anchor file after each append, itself MACed under the same key,
so deleting the newest records is detected too: rewriting the anchor to point at an older
record needs the key. (Putting back an older anchor file the attacker saved earlier is not
detectable from this device alone; that needs the anchor kept off the device.)

The anchor also commits to how many records the log holds up to it and to the first one,
and it exists from the moment the key is made (a genesis anchor, sequence 0): so a wiped
log (rows and anchor gone), a dropped table or a truncated log verify as tampered, never as
"0 records: ok". New records chain from the anchor, not from whatever the database's last
row is: deleting rows cannot restart the chain, and a gap stays visible forever. Where the
key lives outside the state directory (`[audit] key_file`, e.g. /etc/edge/audit.key owned
by root and only readable by the device), whoever can write the database cannot read the
key to re-hash the chain, nor reset the fact that a log exists.

The anchor is written under the store's lock, right after the commit, through a unique
temporary file and `os.replace`, and only ever moves forward. A crash (or a full disk)
between the commit and the anchor write leaves valid records after the anchor: `verify`
reports those as unanchored, not as tampering, because they still carry MACs that only the
key holder can make. A failed anchor write degrades the store; it does not fail the append.

What it cannot do: someone with root on the device can read the key and rewrite both the
log and the anchor; only a copy of the anchor kept off the device would show that.

Not responsible for: deciding what is audited (the callers), or keeping the key safe (the
key file's directory and mode, 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edge.config import Key, Section
from edge.store import Schema, Store, StoreUnavailable

log = logging.getLogger("edge.audit")

AUDIT_SCHEMA = Schema("audit", (
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts_wall REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        event_id TEXT,
        mac TEXT NOT NULL
    );
    """,
))

SECTION = Section("audit", (
    Key("key_file", str, "", "the audit log's HMAC key (default: audit.key in the state directory); put it "
        "where the device's user can read but not write it, e.g. /etc/edge/audit.key", example="/etc/edge/audit.key"),
), "the hash-chained audit log")


def key_path_for(config, state_dir: Path) -> Path:
    """Where the key is: `[audit] key_file`, else beside the database."""
    return Path(config["audit"].key_file) if config["audit"].key_file else Path(state_dir) / "audit.key"


GENESIS = "0" * 64
# Domain separation: an anchor MAC can never be mistaken for (or replayed as) a record MAC.
ANCHOR_CONTEXT = b"edge-audit-anchor-v1\0"


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` to `path` all or nothing, through a temporary file of its own (so two
    writers never share one) in the same directory (so `os.replace` is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # the rename itself survives a power cut only once the directory is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_key(path: Path) -> bytes:
    """The key; FileNotFoundError when there is none, ValueError when the file is corrupt."""
    text = path.read_text().strip()
    key = bytes.fromhex(text)
    if len(key) < 16:
        raise ValueError(f"{len(key)} bytes, expected 32")
    return key


def write_new_key(path: Path) -> bytes:
    key = secrets.token_bytes(32)
    _atomic_write(path, key.hex() + "\n")
    return key


def _canonical(seq: int, ts_wall: float, actor: str, action: str, detail: str, event_id: str | None) -> bytes:
    return json.dumps([seq, ts_wall, actor, action, detail, event_id], separators=(",", ":")).encode()


@dataclass
class VerifyReport:
    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    unanchored: int = 0
    checked: bool = True  # False: nothing could be checked (no usable key); problems says why


class AuditLog:
    """`create_key=False` is for inspection (`edge audit verify`): a missing or corrupt key
    is reported by `verify()`, never replaced. With `create_key=True` (the device) a key is
    created only for an empty log; a missing key with records present raises
    StoreUnavailable, because a new key would make every existing record look edited."""

    def __init__(self, store: Store, key_path: Path, anchor_path: Path, create_key: bool = True):
        self._store = store
        self._key_path = Path(key_path)
        self._anchor = Path(anchor_path)
        self._key: bytes | None = None
        self._head: dict | None = None  # the newest anchor this process wrote or trusted
        self.key_problem: str | None = None
        try:
            self._key = load_key(self._key_path)
        except FileNotFoundError:
            count = self._count()
            if create_key and count == 0:
                try:
                    self._key = write_new_key(self._key_path)
                except OSError as exc:
                    raise StoreUnavailable(f"cannot create the audit key {self._key_path} ({exc.strerror})") from exc
                self._head = {"seq": 0, "mac": GENESIS, "count": 0, "first": None}
                self._advance_anchor(0, GENESIS, 0, None)  # from now on, the log exists
            else:
                self.key_problem = (f"audit key missing: {self._key_path} does not exist, so none of the {count} "
                                    f"records can be checked; restore it from a backup (a new key would make "
                                    f"every record look edited)")
        except (ValueError, UnicodeDecodeError) as exc:
            self.key_problem = (f"audit key corrupt: {self._key_path} does not hold a hex key ({exc}); "
                                f"restore it from a backup")
        except OSError as exc:
            self.key_problem = f"audit key unreadable: {self._key_path} ({exc.strerror}); check its permissions"
        if self._key is None and create_key:
            raise StoreUnavailable(self.key_problem)

    def _count(self) -> int:
        try:
            return self._store.read("SELECT count(*) FROM audit")[0][0]
        except sqlite3.OperationalError:  # no audit table yet (a read-only store, never migrated)
            return 0

    def _mac(self, prev: str, payload: bytes) -> str:
        return hmac.new(self._key, prev.encode() + payload, hashlib.sha256).hexdigest()

    def _anchor_mac(self, seq: int, mac: str, count: int | None, first: str | None) -> str:
        # Anchors written before they carried count and first MAC cover [seq, mac] only.
        fields = [seq, mac] if count is None else [seq, mac, count, first]
        payload = ANCHOR_CONTEXT + json.dumps(fields, separators=(",", ":")).encode()
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def append(self, actor: str, action: str, detail: dict | None = None, event_id: str | None = None) -> int:
        """Append one record; raises StoreUnavailable when it cannot be written: the disk
        cannot take it, or the log has no authentic anchor to chain from (it was wiped or
        its anchor deleted), so callers that must not act unaudited can refuse."""
        if self._key is None:
            raise StoreUnavailable(self.key_problem or "no audit key")
        detail_text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
        ts = self._store._clock.wall()

        # One lock over reading the anchor, the commit and the anchor's update: two appends
        # cannot write their anchors in the opposite order to their records.
        with self._store.exclusive():
            anchor = self._head_anchor()

            def insert(conn):
                last = conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                # Chain from the anchor unless records were committed after it (a crash
                # before its update): rows deleted below the anchor cannot reset the chain.
                seq, prev = (last[0] + 1, last[1]) if last and last[0] > anchor["seq"] else \
                    (anchor["seq"] + 1, anchor["mac"])
                mac = self._mac(prev, _canonical(seq, ts, actor, action, detail_text, event_id))
                conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (seq, ts, actor, action, detail_text, event_id, mac))
                return seq, mac

            seq, mac = self._store.write(insert)
            count = (anchor.get("count") or 0) + seq - anchor["seq"] if anchor.get("count") is not None else None
            first = anchor.get("first") or (mac if seq == 1 else None)
            self._advance_anchor(seq, mac, count, first)
        return seq

    def _head_anchor(self) -> dict:
        """What to chain from: the anchor file (another process may have moved it on), or
        the newest anchor this process wrote when the file cannot be read or written now.
        Neither (a process that starts to find the key but no anchor): refuse."""
        anchor, problem = self._read_anchor()
        head = self._head
        if anchor is not None and (head is None or anchor["seq"] >= head["seq"]):
            return anchor
        if head is not None:
            return head
        problem = problem or (f"audit anchor {self._anchor} is missing although the key exists: the log was "
                              f"wiped or its anchor deleted")
        raise self._store.degrade(f"{problem}; nothing can be audited until a person looks (edge audit verify)")

    def _read_anchor(self) -> tuple[dict | None, str | None]:
        """(the anchor, None) when it is authentic; (None, problem) otherwise; (None, None)
        when there is no anchor file."""
        try:
            text = self._anchor.read_text()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, (f"anchor file {self._anchor} cannot be read ({exc.strerror}): "
                          f"the newest records cannot be checked")
        try:
            anchor = json.loads(text)
            seq, mac, anchor_mac = anchor["seq"], anchor["mac"], anchor.get("anchor_mac")
            count, first = anchor.get("count"), anchor.get("first")
            if not isinstance(seq, int) or not isinstance(mac, str) or not isinstance(anchor_mac, (str, type(None))) \
                    or not isinstance(count, (int, type(None))) or not isinstance(first, (str, type(None))):
                raise TypeError("wrong field types")
        except (ValueError, KeyError, TypeError) as exc:
            return None, (f"anchor file {self._anchor} is corrupt ({type(exc).__name__}: {exc}): it was damaged "
                          f"or rewritten, so the newest records cannot be checked")
        if anchor_mac is None or not hmac.compare_digest(anchor_mac, self._anchor_mac(seq, mac, count, first)):
            return None, (f"anchor file {self._anchor} is not authentic (its MAC does not match the audit key): "
                          f"it was rewritten without the key, e.g. to hide deleted newest records")
        return anchor, None

    def _write_anchor(self, anchor: dict) -> None:
        anchor = dict(anchor, anchor_mac=self._anchor_mac(anchor["seq"], anchor["mac"], anchor["count"],
                                                          anchor["first"]))
        _atomic_write(self._anchor, json.dumps(anchor) + "\n")

    def _advance_anchor(self, seq: int, mac: str, count: int | None, first: str | None) -> None:
        self._head = {"seq": seq, "mac": mac, "count": count, "first": first}
        current, _ = self._read_anchor()
        if current is not None and current["seq"] >= seq and seq > 0:
            return  # another process anchored a newer record already: never move back
        try:
            self._write_anchor({"seq": seq, "mac": mac, "count": count, "first": first})
        except OSError as exc:
            # The record is committed; only its anchor is missing (verify reports it as
            # unanchored). Degrade so a person sees it, rather than fail the caller.
            log.error("cannot write the audit anchor %s (%s); record %d is committed but not anchored",
                      self._anchor, exc, seq)
            self._store.degrade(f"cannot write the audit anchor {self._anchor} ({exc.strerror or exc}); "
                                f"the newest audit records are not anchored")

    def records(self) -> list[dict]:
        return [dict(r) for r in self._store.read("SELECT * FROM audit ORDER BY seq")]

    def verify(self) -> VerifyReport:
        table_missing = False
        try:
            rows = self._store.read("SELECT * FROM audit ORDER BY rowid")
        except sqlite3.OperationalError:  # no audit table: never migrated (no anchor either), or dropped
            rows, table_missing = [], True
        if self._key is None:
            return VerifyReport(ok=False, records=len(rows), problems=[self.key_problem or "no audit key"],
                                checked=False)
        problems: list[str] = []
        anchor, anchor_problem = self._read_anchor()
        if table_missing and anchor is not None and anchor["seq"] > 0:
            problems.append("the audit table is gone (it was dropped)")
        prev, expected_seq = GENESIS, 1
        for r in rows:
            if r["seq"] != expected_seq:
                problems.append(f"record {r['seq']}: expected sequence number {expected_seq} "
                                f"(a record was deleted, inserted or reordered)")
            mac = self._mac(prev, _canonical(r["seq"], r["ts_wall"], r["actor"], r["action"],
                                              r["detail"], r["event_id"]))
            if not hmac.compare_digest(mac, r["mac"]):
                problems.append(f"record {r['seq']}: MAC does not match (the record or one before it "
                                f"was edited, inserted or re-hashed without the key)")
            prev, expected_seq = r["mac"], r["seq"] + 1
        unanchored = 0
        if anchor_problem:
            problems.append(anchor_problem)
        elif anchor is None:
            problems.append(f"anchor file {self._anchor} is missing although the key exists: the log was wiped "
                            f"or its anchor deleted" if not rows else
                            f"anchor file {self._anchor} is missing: the newest records cannot be checked")
        elif anchor["seq"] == 0:  # the genesis anchor: no record was anchored yet
            unanchored = len(rows)
        else:
            by_seq = {r["seq"]: r for r in rows}
            anchored = by_seq.get(anchor["seq"])
            held = sum(1 for r in rows if r["seq"] <= anchor["seq"])
            if anchored is not None and anchor.get("count") is not None and held != anchor["count"]:
                problems.append(f"the anchor counts {anchor['count']} records up to {anchor['seq']}, the log holds "
                                f"{held} (records were deleted)")
            if anchor.get("first") and not (rows and hmac.compare_digest(rows[0]["mac"], anchor["first"])):
                problems.append("the first record is not the one the anchor names (the start of the log was "
                                "deleted or replaced)")
            if anchored is None:
                problems.append(f"the anchored newest record {anchor['seq']} is gone "
                                f"(records at the end of the log were deleted)")
            elif not hmac.compare_digest(anchored["mac"], anchor["mac"]):
                problems.append(f"record {anchor['seq']} differs from the anchored newest record")
            else:
                unanchored = sum(1 for r in rows if r["seq"] > anchor["seq"])
        return VerifyReport(ok=not problems, records=len(rows), problems=problems, unanchored=unanchored)
