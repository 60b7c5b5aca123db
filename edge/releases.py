"""The release layout on a device and its two links, switched atomically:

    <prefix>/releases/<version>/   one installed release each (a venv: bin/edge)
    <prefix>/current   -> releases/<version>   what the service starts (/opt/edge/current/bin/edge)
    <prefix>/committed -> releases/<version>   the last release that proved itself ready and healthy
    <prefix>/update.json                        the update in progress (if any), and the last outcome
    <prefix>/update.lock                        held (flock) by the updater while it runs

`current` differs from `committed` only while an update is on trial. Found so at boot with
no updater holding the lock (a power cut or a kill mid-update), the trial release is
uncommitted and is rolled back (edge.update.recover_at_boot). A link is switched by
creating a temporary symlink and renaming it over the old one (rename(2) is atomic), then
syncing the directory, so after a power cut the link names either the old or the new
release, never nothing. RAUC and Mender do the same with their boot slots; here the slots
are directories.

A prefix without a `committed` link (installed before it existed, or by hand) counts its
`current` release as committed.

Not responsible for: installing a release or deciding when to commit (edge.update).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Mapping

DEFAULT_PREFIX = Path("/opt/edge")
INCOMPLETE = ".edge-incomplete"  # in a release directory until it is completely installed
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")


class ReleaseError(Exception):
    """A release operation that cannot go ahead; the text says why and what to do."""


def prefix_for(environ: Mapping[str, str] = os.environ) -> Path:
    """`EDGE_PREFIX`, else /opt/edge."""
    return Path(environ.get("EDGE_PREFIX") or DEFAULT_PREFIX)


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version) or ".." in version:
        raise ReleaseError(f"{version!r} is not a release version (letters, digits, . + _ -; e.g. 1.2.0)")
    return version


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file, fsync and rename: old or new after a power cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ReleaseLayout:
    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.releases = self.prefix / "releases"
        self.current_link = self.prefix / "current"
        self.committed_link = self.prefix / "committed"
        self.state_path = self.prefix / "update.json"
        self.lock_path = self.prefix / "update.lock"

    def exists(self) -> bool:
        """Whether this prefix holds a release layout at all (a source checkout does not)."""
        return self.current_link.is_symlink()

    def release(self, version: str) -> Path:
        return self.releases / check_version(version)

    def edge_binary(self, version: str) -> Path:
        return self.release(version) / "bin" / "edge"

    def versions(self) -> list[str]:
        """Installed releases (complete ones: a half-unpacked one still has its marker,
        edge.release_install.INCOMPLETE)."""
        if not self.releases.is_dir():
            return []
        return sorted((p.name for p in self.releases.iterdir()
                       if p.is_dir() and VERSION_RE.match(p.name) and not (p / INCOMPLETE).exists()),
                      key=_version_key)

    def _target(self, link: Path) -> str | None:
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def current(self) -> str | None:
        return self._target(self.current_link)

    def committed(self) -> str | None:
        """The committed release (the current one when no `committed` link was ever made)."""
        return self._target(self.committed_link) or self.current()

    def switch(self, link: Path, version: str) -> None:
        """Point `link` at releases/<version>, atomically (temporary symlink, then rename)."""
        if not self.release(version).is_dir():
            raise ReleaseError(f"release {version} is not installed in {self.releases}")
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        os.replace(tmp, link)
        sync_dir(link.parent)

    def switch_current(self, version: str) -> None:
        self.switch(self.current_link, version)

    def commit(self, version: str) -> None:
        self.switch(self.committed_link, version)

    # -- the update record ----------------------------------------------------------------
    def state(self) -> dict:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, state: dict) -> None:
        write_atomically(self.state_path, json.dumps(state, indent=1, sort_keys=True).encode())

    def update_state(self, **changes) -> dict:
        state = self.state()
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        self.save_state(state)
        return state

    # -- the updater's lock ---------------------------------------------------------------
    @contextlib.contextmanager
    def updating(self) -> Iterator[None]:
        """Hold the update lock (the kernel drops it when the holder dies, power cut or
        kill -9); ReleaseError when another updater holds it."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReleaseError(f"another update is running (it holds {self.lock_path}); wait for it, "
                                   f"see `edge update --status`") from None
            yield
        finally:
            os.close(fd)

    def updater_running(self) -> bool:
        """Whether a live updater holds the lock (tested without taking it for long)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def prune(self, keep: int) -> list[str]:
        """Remove the oldest releases beyond `keep`, never the current or committed one, nor
        the one before it (`edge rollback`'s target)."""
        protected = {self.current(), self.committed(), self.state().get("previous")}
        removable = [v for v in self.versions() if v not in protected]
        removed = []
        while removable and len(self.versions()) > keep:
            version = removable.pop(0)
            shutil.rmtree(self.release(version))
            removed.append(version)
        return removed


def _version_key(version: str) -> tuple:
    """Natural order (1.10 after 1.9); text parts sort before numbers of the same place."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.+_-]", version))
