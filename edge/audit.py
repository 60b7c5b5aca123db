"""Hash-chained, keyed audit log of security-relevant actions (door openings, enrolments,
config changes, remote commands).

Each record's MAC is HMAC-SHA256(key, previous MAC + the record's canonical JSON), with the
key in a file beside the database (not inside it), so someone who can edit the database
cannot re-hash the chain after changing a record. The newest record's sequence number and
MAC are also written to an anchor file after each append, so deleting the newest records is
detected too. A crash between the commit and the anchor write leaves valid records after
the anchor: `verify` reports those as unanchored, not as tampering, because they still carry
MACs that only the key holder can make.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from edge.store import Store, register_migrations

register_migrations("audit", [
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
])

GENESIS = "0" * 64


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_or_create_key(path: Path) -> bytes:
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
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


class AuditLog:
    def __init__(self, store: Store, key_path: Path, anchor_path: Path):
        self._store = store
        self._key = load_or_create_key(key_path)
        self._anchor = anchor_path

    def _mac(self, prev: str, payload: bytes) -> str:
        return hmac.new(self._key, prev.encode() + payload, hashlib.sha256).hexdigest()

    def append(self, actor: str, action: str, detail: dict | None = None, event_id: str | None = None) -> int:
        detail_text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
        ts = self._store._clock.wall()

        def insert(conn):
            last = conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            mac = self._mac(prev, _canonical(seq, ts, actor, action, detail_text, event_id))
            conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (seq, ts, actor, action, detail_text, event_id, mac))
            return seq, mac

        seq, mac = self._store.write(insert)
        _atomic_write(self._anchor, json.dumps({"seq": seq, "mac": mac}) + "\n")
        return seq

    def records(self) -> list[dict]:
        return [dict(r) for r in self._store.read("SELECT * FROM audit ORDER BY seq")]

    def verify(self) -> VerifyReport:
        rows = self._store.read("SELECT * FROM audit ORDER BY rowid")
        problems: list[str] = []
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
        try:
            anchor = json.loads(self._anchor.read_text())
        except FileNotFoundError:
            anchor = None
            if rows:
                problems.append(f"anchor file {self._anchor} is missing: the newest records cannot be checked")
        if anchor:
            by_seq = {r["seq"]: r for r in rows}
            anchored = by_seq.get(anchor["seq"])
            if anchored is None:
                problems.append(f"the anchored newest record {anchor['seq']} is gone "
                                f"(records at the end of the log were deleted)")
            elif not hmac.compare_digest(anchored["mac"], anchor["mac"]):
                problems.append(f"record {anchor['seq']} differs from the anchored newest record")
            else:
                unanchored = sum(1 for r in rows if r["seq"] > anchor["seq"])
        return VerifyReport(ok=not problems, records=len(rows), problems=problems, unanchored=unanchored)
