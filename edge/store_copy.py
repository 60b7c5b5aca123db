"""Copies of the store file that are consistent while the runtime writes to it, and what a
copy says about its schema. Used by backups (edge.backup) and by the updater, which saves the
store before a new release migrates it (edge.update).

SQLite's online backup API copies the pages under a read transaction, so the copy is one
consistent snapshot even with the device running; a plain file copy of a WAL database is
not (the -wal file holds the latest commits). The copy is made in one step: copied in
several, it starts over whenever another process commits in between
(https://www.sqlite.org/backup.html), which a busy device could make endless, while in WAL
mode one long read transaction does not hold up the device's writes.

Not responsible for: which components and versions this release knows (edge.assembly's
store_schemas) or deciding what to do with a newer schema (the callers).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Callable


def copy_store(source: Path, target: Path, progress: Callable[[int, int], None] | None = None) -> None:
    """Copy the database `source` (possibly live) into a new file `target` (replaced when it
    exists), fsynced, in the rollback-journal mode a single file needs to be complete."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(tmp)
        try:
            page_size = src.execute("PRAGMA page_size").fetchone()[0]
            src.backup(dst, pages=-1, progress=(lambda status, remaining, total: progress(
                (total - remaining) * page_size, total * page_size)) if progress else None)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
    finally:
        src.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def remove_store_files(path: Path) -> None:
    """Remove a database and its -wal/-shm: a stale -wal beside another database file
    would be replayed into it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def schema_versions(path: Path) -> dict[str, int]:
    """The highest applied migration of each component in the database at `path`."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT component, MAX(version) FROM schema_migrations GROUP BY component").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {component: int(version) for component, version in rows}


def integrity(path: Path) -> str:
    """SQLite's `PRAGMA integrity_check` of the file: "ok", or what is wrong."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
