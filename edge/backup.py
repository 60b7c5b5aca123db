"""Backups of a device and restoring them.

A backup is one gzip-compressed tar file:
  manifest.json         format, edge version, node, the store's schema (component → version),
                        and every other member's SHA-256, size and mode
  store/edge.sqlite3    the store, copied with SQLite's online backup API (consistent while
                        the device runs): events, known faces, the audit log, job checkpoints
  state/...             the rest of the state directory: audit anchor, last known-good config,
                        snapshots, printer jobs kept there, ...
  config/edge.toml      the config file
  extra/<name>/...      directories the config keeps outside the state directory (the
                        printer's jobs_dir when a printer section names one)
  secrets/<section>.<key>  secret files the config names and the audit key, only with
                        `with_secrets` (restored with mode 0600 to where the config says)
Left out: what belongs to one boot (endpoint, boot counter, update bookkeeping), earlier
backups and the updater's store copies.

Restore checks everything before it touches anything: the manifest, that the archive holds
exactly the files it lists, each file's checksum (while unpacking into a staging directory
beside the state directory), the store's integrity and that its schema is the manifest's
and not newer than this release knows (restore it with the newer release instead). Only
then is the service stopped; each file is moved into place with rename(2), the previous
state kept in `<state>/.pre-restore/` (one generation, to undo a mistaken restore), and the
service is started again. A failure while moving puts the previous files back. An outside
folder (extra/) becomes the backup's the same way, its previous contents put aside under
`.pre-restore/outside/`; restored files belong to the owner of the folder they go into.

Not responsible for: finding the device (edge.cli_device) or scheduling (edge.backup_schedule).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

from edge.store import DB_NAME
from edge.store_copy import copy_store, integrity, remove_store_files, schema_versions

FORMAT = 1
MANIFEST = "manifest.json"
STORE_MEMBER = "store/" + DB_NAME
CONFIG_MEMBER = "config/edge.toml"
STAGING, PREVIOUS = ".restore-staging", ".pre-restore"
# Never backed up from the state directory: the store's own files (copied through SQLite),
# what belongs to one boot, and what would make backups nest.
SKIP_NAMES = frozenset({DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", "endpoint", "boot-count",
                        "boot-cause", "update-result.json", "update-request.json", "update-backup", "backups",
                        STAGING, PREVIOUS})
CHUNK = 1 << 16
Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total)


class BackupError(Exception):
    """The backup cannot be made or restored; the text says why and what to do. Nothing was
    changed on the device."""


@dataclass
class Sources:
    """What a backup of this device takes, and where a restore puts it back."""

    state_dir: Path
    config_path: Path | None
    secrets: dict[str, Path] = field(default_factory=dict)  # "section.key" → file
    extra: dict[str, Path] = field(default_factory=dict)    # name → directory outside the state dir
    node: str = ""
    version: str = ""


def sources_for(config, classes, state_dir: Path, config_path: Path | None) -> Sources:
    """The secret files and outside directories of `config` (every section's `*_file` secret
    keys, the audit key, and the printer's jobs directory when configured)."""
    from edge import __version__
    from edge.assembly import all_sections
    from edge.audit import key_path_for

    secrets = {f"{s.name}.{k.name}": Path(config[s.name][k.name]) for s in all_sections(classes)
               if s.name in config.sections for k in s.keys if k.secret_file and config[s.name][k.name]}
    secrets["audit.key_file"] = key_path_for(config, state_dir)
    extra = {}
    printer = config.sections.get("printer")
    if printer is not None and "jobs_dir" in printer and printer["jobs_dir"] \
            and not _inside(Path(printer["jobs_dir"]), state_dir):  # inside, it is part of state/ already
        extra["printer-jobs"] = Path(printer["jobs_dir"])
    return Sources(Path(state_dir), config_path, secrets, extra, config["node"].id, __version__)


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name != str(path):
        raise BackupError(f"the backup names a file {name!r} outside its own folders; it is not a backup made by "
                          f"edge, or it was tampered with")
    return name


def _state_files(sources: Sources) -> list[tuple[str, Path]]:
    """The state directory's files, less SKIP_NAMES and the secrets kept there (the audit
    key beside the store goes under secrets/, and only on request)."""
    secret_paths = {p.resolve() for p in sources.secrets.values()}
    out = []
    for root, dirs, files in os.walk(sources.state_dir):
        top = Path(root) == sources.state_dir
        dirs[:] = sorted(d for d in dirs if not (top and d in SKIP_NAMES))
        for name in sorted(files):
            path = Path(root) / name
            if (top and name in SKIP_NAMES) or name.endswith(".tmp") or path.resolve() in secret_paths:
                continue
            if path.is_file():
                out.append((f"state/{path.relative_to(sources.state_dir).as_posix()}", path))
    return out


def _members(sources: Sources, store_copy: Path | None, with_secrets: bool) -> list[tuple[str, Path]]:
    members = []
    if store_copy is not None:
        members.append((STORE_MEMBER, store_copy))
    members += _state_files(sources)
    if sources.config_path is not None and sources.config_path.is_file():
        members.append((CONFIG_MEMBER, sources.config_path))
    for name, directory in sources.extra.items():
        if directory.is_dir():
            members += [(f"extra/{name}/{p.relative_to(directory).as_posix()}", p)
                        for p in sorted(directory.rglob("*")) if p.is_file()]
    if with_secrets:
        members += [(f"secrets/{key}", path) for key, path in sorted(sources.secrets.items()) if path.is_file()]
    return members


def create_backup(sources: Sources, target: Path, *, with_secrets: bool = False,
                  progress: Progress | None = None) -> dict:
    """Write the backup to `target` (through a temporary file, renamed when complete);
    returns its manifest."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edge-backup-", dir=target.parent) as tmp:
        store = sources.state_dir / DB_NAME
        store_copy = None
        if store.exists():
            store_copy = Path(tmp) / DB_NAME
            copy_store(store, store_copy, (lambda done, total: progress("copying the store", done, total))
                       if progress else None)
        members = _members(sources, store_copy, with_secrets)
        files, total, done = [], sum(p.stat().st_size for _, p in members), 0
        for name, path in members:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            size = path.stat().st_size
            files.append({"name": name, "sha256": digest.hexdigest(), "size": size,
                          "mode": 0o600 if name.startswith("secrets/") else path.stat().st_mode & 0o777})
        now = time.time()
        manifest = {"format": FORMAT, "created_wall": now,
                    "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
                    "edge_version": sources.version, "node": sources.node,
                    "schema": schema_versions(store_copy) if store_copy else {},
                    "with_secrets": with_secrets, "files": files}
        partial = Path(tmp) / "backup.tar.gz"
        # Secrets may be inside: the file is for its owner only.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(now), 0o600
            tar.addfile(info, io.BytesIO(data))
            for entry, (name, path) in zip(files, members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = entry["size"], int(path.stat().st_mtime), entry["mode"]
                with open(path, "rb") as f:
                    tar.addfile(info, f)
                done += entry["size"]
                if progress:
                    progress("writing the backup", done, total)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
    return manifest


# -- restore -------------------------------------------------------------------------------
def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict:
    try:
        member = tar.extractfile(MANIFEST)
        manifest = json.loads(member.read(1 << 24)) if member else None
    except (KeyError, ValueError, tarfile.TarError, OSError) as exc:
        raise BackupError(f"{path} has no readable {MANIFEST} ({exc}); it is not an edge backup, or it is "
                          f"damaged") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise BackupError(f"{path}: the manifest is not an edge backup manifest")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is backup format {manifest.get('format')!r}; this release reads format {FORMAT}: "
                          f"restore it with the release that made it ({manifest.get('edge_version')})")
    return manifest


def check_schema(manifest: dict, known: dict[str, int]) -> None:
    """Refuse a store newer than this release: it would not understand its tables."""
    newer = [f"{c} v{v} (this release knows {'up to v' + str(known[c]) if c in known else 'no such part'})"
             for c, v in sorted(manifest.get("schema", {}).items()) if v > known.get(c, 0)]
    if newer:
        raise BackupError(f"the backup's store is newer than this release: {', '.join(newer)}; it was made by edge "
                          f"{manifest.get('edge_version')}: update this device to that release or newer "
                          f"(`edge update`), then restore; nothing was changed")


def unpack_verified(path: Path, staging: Path, known: dict[str, int], progress: Progress | None = None) -> dict:
    """Unpack the backup at `path` into the new directory `staging`, checking everything
    (see the module's docstring); returns the manifest. Raises BackupError; `staging` is
    then removed."""
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"cannot open {path} as a backup ({exc}); nothing was changed") from None
    try:
        with tar:
            manifest = _read_manifest(tar, path)
            check_schema(manifest, known)
            listed = {_safe_name(f["name"]): f for f in manifest["files"]}
            found = [m for m in tar.getmembers() if m.name != MANIFEST]
            names = [m.name for m in found]
            extra, absent = set(names) - set(listed), set(listed) - set(names)
            if extra or absent or len(names) != len(set(names)) or any(not m.isfile() for m in found):
                raise BackupError(f"{path} does not hold exactly the files its manifest lists (unlisted: "
                                  f"{sorted(extra)[:3]}, missing: {sorted(absent)[:3]}); it was tampered with or "
                                  f"damaged; nothing was changed")
            staging.mkdir(mode=0o700)
            total, done = sum(f["size"] for f in listed.values()), 0
            for member in found:
                entry = listed[member.name]
                out_path = staging / member.name
                out_path.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                source = tar.extractfile(member)
                fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress("checking the backup", done, total)
                if digest.hexdigest() != entry["sha256"]:
                    raise BackupError(f"{member.name} in {path} does not match its checksum; the backup was "
                                      f"tampered with or damaged; nothing was changed")
                os.chmod(out_path, int(entry.get("mode", 0o600)) & 0o777)
    except (tarfile.TarError, OSError, EOFError, KeyError, TypeError, ValueError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError(f"{path} cannot be read as a backup ({type(exc).__name__}: {exc}); nothing was "
                          f"changed") from None
    except BackupError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    store = staging / STORE_MEMBER
    if store.exists():
        check = integrity(store)
        problems = [] if check == "ok" else [f"the store fails SQLite's integrity check ({check})"]
        if schema_versions(store) != manifest.get("schema", {}):
            problems.append("the store's schema is not the one its manifest states")
        if problems:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError(f"{path}: {'; '.join(problems)}; nothing was changed")
    return manifest


@dataclass
class Placement:
    """Where each part of a staged backup goes on this device."""

    sources: Sources

    def target(self, name: str) -> Path | None:
        s = self.sources
        top, _, rest = name.partition("/")
        if top == "store":
            return s.state_dir / DB_NAME
        if top == "state":
            return s.state_dir / rest
        if top == "config":
            return s.config_path
        if top == "secrets":
            return s.secrets.get(rest)
        if top == "extra":
            name, _, inner = rest.partition("/")
            return s.extra[name] / inner if name in s.extra else None
        return None


def restore_staged(staging: Path, manifest: dict, sources: Sources) -> list[str]:
    """Move a verified staging directory's files into place (the service must be stopped).
    The state directory becomes the backup's; what it held goes to `<state>/.pre-restore`.
    Returns notes for the person (parts with nowhere to go)."""
    state_dir = sources.state_dir
    previous = state_dir / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir(mode=0o700)
    placement, notes, moved = Placement(sources), [], []

    def put_aside(path: Path) -> None:
        if not (path.exists() or path.is_symlink()):
            return
        if _inside(path, state_dir):
            aside = previous / path.relative_to(state_dir)
        else:
            aside = previous / "outside" / str(path).lstrip("/")
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, aside)  # a rename when on one file system
        moved.append((path, aside))

    # secrets the backup does not carry stay where they are (the audit key beside the store)
    brought = {placement.target(f["name"]) for f in manifest["files"]}
    kept = {p.resolve() for p in sources.secrets.values()} - {p.resolve() for p in brought if p is not None}
    # outside folders the backup has files of (printer jobs) become the backup's, as the state
    # directory does; their contents are put aside, not the folder (it may be a mount point)
    names = {f["name"].split("/")[1] for f in manifest["files"] if f["name"].startswith("extra/")}
    folders = [sources.extra[name] for name in sorted(names) if name in sources.extra]
    made = [folder for folder in folders if not folder.is_dir()]
    try:
        for entry in sorted(os.listdir(state_dir)):
            path = state_dir / entry
            if entry not in (STAGING, PREVIOUS, "backups", "update-backup") and path.resolve() not in kept:
                put_aside(path)
        for folder in folders:
            for entry in sorted(os.listdir(folder)) if folder.is_dir() else ():
                put_aside(folder / entry)
        remove_store_files(state_dir / DB_NAME)
        for entry in manifest["files"]:
            target = placement.target(entry["name"])
            if target is None:
                notes.append(f"{entry['name']}: this device's config has no place for it; left out")
                continue
            owner = None
            if not _inside(target, state_dir):
                owner = _owner(target)
                put_aside(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staging / entry["name"], target)  # a rename when on one file system
            if owner is not None and os.geteuid() == 0:  # /etc/edge/edge.toml stays root:edge
                os.chown(target, *owner)
    except OSError:
        for original, aside in reversed(moved):  # put the previous files back
            shutil.rmtree(original, ignore_errors=True) if original.is_dir() else original.unlink(missing_ok=True)
            shutil.move(aside, original)
        raise
    own_like(state_dir, state_dir)
    for folder in folders:
        # restored as root: the files belong to their folder's owner, and a folder the restore
        # made to the device's user, like the state directory (the printer adds jobs there)
        if folder in made:
            own_like(folder, state_dir)
        else:
            for entry in folder.iterdir():
                own_like(entry, folder)
    return notes


def restore_backup(path: Path, sources: Sources, known: dict[str, int], service,
                   progress: Progress | None = None) -> tuple[dict, list[str]]:
    """Check the backup at `path` completely, then stop the service (`service.stop()`),
    move it into place and start the service again. Returns (manifest, notes). A refused
    backup raises BackupError before the service is touched."""
    staging = sources.state_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    sources.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        manifest = unpack_verified(Path(path), staging, known, progress)
        service.stop()
        try:
            notes = restore_staged(staging, manifest, sources)
        finally:
            service.start()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest, notes


def _inside(path: Path, directory: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(directory).resolve())
        return True
    except ValueError:
        return False


def _owner(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_uid, st.st_gid


def own_like(path: Path, reference: Path) -> None:
    """Restored files belong to the state directory's owner (the device's user), not to root
    who ran the restore."""
    if os.geteuid() != 0:
        return
    st = os.stat(reference)
    for p in [path, *Path(path).rglob("*")]:
        os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)


def list_backups(directory: Path) -> list[Path]:
    """Backups in `directory`, oldest first (by name: they carry a sortable timestamp)."""
    return sorted(Path(directory).glob("edge-backup-*.tar.gz")) if Path(directory).is_dir() else []


def rotate(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` backups in `directory`; returns the removed ones."""
    old = list_backups(directory)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


def backup_name(node: str, wall: float) -> str:
    return f"edge-backup-{node}-{datetime.fromtimestamp(wall, timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.tar.gz"
