"""Known faces and the snapshot index, in the device's store (migration component "faces").

Responsible for: the enrolled encodings (128 numbers each, one or two per photo, never the
photos), who is labelled in which snapshot (so removing a person removes their snapshots too) and a
version counter that every change to the faces bumps, whichever process made it. The
running doorbell reads that one row each loop and reloads the encodings when it moved, so
`edge faces enroll` in a shell takes effect without a restart. The counter is kept by
triggers, so no writer can forget it; `PRAGMA data_version` would miss the runtime's own
writes (it only counts other connections' commits).

Not responsible for: computing encodings (recognition.py, in a child process or the CLI),
the snapshot files themselves (snapshots.py).

Encodings are biometric data: nothing here logs them, and `people()` reports counts only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from edge.store import Schema, Store

FACES_SCHEMA = Schema("faces", (
    """
    CREATE TABLE faces (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        encoding BLOB NOT NULL,      -- 128 little-endian float64
        source TEXT NOT NULL,        -- "photo:<sha256>" or "ring:<event_id>"; never the photo
        created_wall REAL NOT NULL
    );
    CREATE UNIQUE INDEX faces_name_source ON faces(name, source);
    CREATE TABLE faces_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
    INSERT INTO faces_version VALUES (1, 0);
    CREATE TRIGGER faces_added AFTER INSERT ON faces
        BEGIN UPDATE faces_version SET version = version + 1; END;
    CREATE TRIGGER faces_removed AFTER DELETE ON faces
        BEGIN UPDATE faces_version SET version = version + 1; END;
    CREATE TRIGGER faces_changed AFTER UPDATE ON faces
        BEGIN UPDATE faces_version SET version = version + 1; END;
    CREATE TABLE snapshots (
        event_id TEXT PRIMARY KEY,
        file TEXT NOT NULL,          -- file name inside the snapshot folder
        ts_wall REAL NOT NULL,
        names TEXT NOT NULL          -- JSON list of the enrolled people recognized in it
    );
    """,
))

ENCODING_SIZE = 128
_NAME = re.compile(r"^[\w][\w .'-]{0,63}$")


def check_name(name: str) -> str:
    """The name, stripped; ValueError with what is allowed when it cannot be used."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not _NAME.match(stripped):
        raise ValueError(f"{name!r} cannot be used as a name: use 1 to 64 letters, digits, spaces, "
                         f"dots, apostrophes, _ or -, starting with a letter or digit (for example \"Alice\")")
    return stripped


def _blob(encoding: np.ndarray) -> bytes:
    array = np.asarray(encoding, dtype="<f8")
    if array.shape != (ENCODING_SIZE,):
        raise ValueError(f"a face encoding has {ENCODING_SIZE} numbers, got shape {array.shape}")
    return array.tobytes()


@dataclass(frozen=True)
class Person:
    name: str
    photos: int          # photos and rings enrolled (each gives one or more encodings)
    first_wall: float
    last_wall: float


@dataclass(frozen=True)
class Snapshot:
    event_id: str
    file: str
    ts_wall: float
    names: tuple[str, ...]


# Further encodings of one source (a photo's night copy) are stored as "<source>#<n>".
VARIANT_SEPARATOR = "#"
_PHOTO_ROWS = f"source NOT LIKE '%{VARIANT_SEPARATOR}%'"
_COUNT_PHOTOS = f"SELECT COUNT(*) FROM faces WHERE name = ? AND {_PHOTO_ROWS}"

# The snapshots whose `names` (a JSON list) hold the bound name.
_LABELLED_WITH = "FROM snapshots s, json_each(s.names) j WHERE j.value = ?"


class FaceStore:
    def __init__(self, store: Store):
        self.store = store

    def version(self) -> int:
        return self.store.read("SELECT version FROM faces_version WHERE id = 1")[0][0]

    def add(self, name: str, photos: Sequence[tuple[str, Sequence[np.ndarray]]], ts_wall: float) -> tuple[int, int]:
        """Enroll `name` with (source, encodings) pairs, one per photo or ring, in one
        transaction. The first encoding of a source is stored under the source itself, the
        others (its night copy) under "source#1", ...; so a photo is counted once however
        many encodings it gave. Returns (photos added, photos already there): the same photo
        enrolled twice for a name is kept once (re-enrolling an old photo adds only the
        encodings it lacked)."""
        name = check_name(name)
        if any(isinstance(encodings, np.ndarray) and encodings.ndim == 1 for _, encodings in photos):
            raise TypeError("give each source a list of encodings, not one encoding")
        rows = [(name, _blob(encoding), source if k == 0 else f"{source}{VARIANT_SEPARATOR}{k}", ts_wall)
                for source, encodings in photos for k, encoding in enumerate(encodings)]

        def insert(conn):
            before = conn.execute(_COUNT_PHOTOS, (name,)).fetchone()[0]
            conn.executemany("INSERT OR IGNORE INTO faces(name, encoding, source, created_wall) "
                             "VALUES (?, ?, ?, ?)", rows)
            return conn.execute(_COUNT_PHOTOS, (name,)).fetchone()[0] - before

        added = self.store.write(insert)
        return added, len({source for source, _ in photos}) - added

    def known(self) -> dict[str, list[np.ndarray]]:
        known: dict[str, list[np.ndarray]] = {}
        for row in self.store.read("SELECT name, encoding FROM faces ORDER BY name, id"):
            known.setdefault(row["name"], []).append(np.frombuffer(row["encoding"], dtype="<f8").copy())
        return known

    def people(self) -> list[Person]:
        return [Person(r["name"], r["n"], r["first"], r["last"]) for r in self.store.read(
            f"SELECT name, SUM({_PHOTO_ROWS}) AS n, MIN(created_wall) AS first, MAX(created_wall) AS last "
            "FROM faces GROUP BY name ORDER BY name COLLATE NOCASE")]

    def remove(self, name: str, *, keep_files: Iterable[str] = ()) -> tuple[int, list[str]]:
        """Forget `name`: their encodings and the index rows of snapshots labelled with
        them, except the rows of `keep_files` (snapshot files that could not be deleted,
        so the next `remove` finds them again). Delete the files first (snapshot_files),
        then call this: a row is never dropped while its file is still on disk. Returns
        (photos removed, files whose rows were removed)."""
        keep = set(keep_files)

        def delete(conn):
            removed = conn.execute(_COUNT_PHOTOS, (name,)).fetchone()[0]
            conn.execute("DELETE FROM faces WHERE name = ?", (name,))
            rows = [(r[0], r[1]) for r in conn.execute(f"SELECT s.event_id, s.file {_LABELLED_WITH}", (name,))]
            gone = [(event_id, file) for event_id, file in rows if file not in keep]
            conn.executemany("DELETE FROM snapshots WHERE event_id = ?", [(event_id,) for event_id, _ in gone])
            return removed, [file for _, file in gone]

        return self.store.write(delete)

    def snapshot_files(self, name: str) -> list[str]:
        """File names of the snapshots labelled with `name`."""
        return [r[0] for r in self.store.read(f"SELECT s.file {_LABELLED_WITH}", (name,))]

    # -- snapshot index ----------------------------------------------------------------------
    def record_snapshot(self, event_id: str, file: str, names: Iterable[str], ts_wall: float) -> None:
        self.store.write(lambda c: c.execute(
            "INSERT OR REPLACE INTO snapshots(event_id, file, ts_wall, names) VALUES (?, ?, ?, ?)",
            (event_id, file, ts_wall, json.dumps(sorted(set(names))))))

    def label_snapshot(self, event_id: str, name: str) -> None:
        """Add `name` to the people shown in the snapshot of `event_id` (after "this was
        Alice"), so removing Alice removes it."""
        def label(conn):
            row = conn.execute("SELECT names FROM snapshots WHERE event_id = ?", (event_id,)).fetchone()
            if row is not None:
                names = sorted(set(json.loads(row[0])) | {name})
                conn.execute("UPDATE snapshots SET names = ? WHERE event_id = ?", (json.dumps(names), event_id))
        self.store.write(label)

    def snapshot(self, event_id: str) -> Snapshot | None:
        rows = self.store.read("SELECT * FROM snapshots WHERE event_id = ?", (event_id,))
        return self._snapshot(rows[0]) if rows else None

    def forget_snapshots(self, files: Iterable[str]) -> None:
        files = list(files)
        if files:
            self.store.write(lambda c: c.executemany("DELETE FROM snapshots WHERE file = ?",
                                                     [(f,) for f in files]))

    @staticmethod
    def _snapshot(row) -> Snapshot:
        return Snapshot(row["event_id"], row["file"], row["ts_wall"], tuple(json.loads(row["names"])))
