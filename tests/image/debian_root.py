"""A minimal Debian bookworm amd64 root for the installer and container tests, built with
mmdebstrap once and cached as a tarball outside the checkout (like .ci/aarch64's arm64 root),
keyed by the package list: changing the list builds a new one. Beside it, pip's cache and a
wheelhouse of the project's dependencies, so re-runs install without the network.

Environment: EDGE_CI_CACHE (default /var/cache/edge-ci).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from edge.testing.requirements import missing, require_program

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the installer needs in a root (python3-venv for the release venv, passwd for its user,
# ca-certificates for pip), what the boot test needs (systemd as init, udev as on a Pi) and the Debian packages
# the example config's features ask for on Debian (mosquitto-clients), so the installer finds
# them installed and the tests do not depend on apt.
PACKAGES = ("python3", "python3-venv", "passwd", "ca-certificates", "systemd", "systemd-sysv", "udev",
            "mosquitto-clients")
MMDEBSTRAP_ARGS = ("--arch=amd64", "--variant=apt", f"--include={','.join(PACKAGES)}",
                   "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
                   "--dpkgopt=path-exclude=/usr/share/doc/*")


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGE_CI_CACHE") or "/var/cache/edge-ci")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pip_cache() -> Path:
    path = cache_dir() / "pip"
    path.mkdir(exist_ok=True)
    return path


def require_root_user() -> None:
    if os.geteuid() != 0:
        missing("building and entering a throwaway Debian root needs root: run the tests as root (CI does)")


def root_tarball() -> Path:
    """The cached tarball, built on the first call for this package list (minutes, cold)."""
    require_root_user()
    mmdebstrap = require_program("mmdebstrap")
    cache = cache_dir()
    key = hashlib.sha256("\n".join((SUITE, MIRROR, *MMDEBSTRAP_ARGS)).encode()).hexdigest()[:12]
    tarball = cache / f"{SUITE}-amd64-{key}.tar"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # .ci/aarch64 and parallel runs share the cache
        if not tarball.is_file() or tarball.stat().st_size == 0:
            building = cache / f".building-{os.getpid()}.tar"
            result = subprocess.run([mmdebstrap, "--quiet", *MMDEBSTRAP_ARGS, SUITE, str(building), MIRROR],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                building.unlink(missing_ok=True)
                raise RuntimeError(f"mmdebstrap could not build the {SUITE} amd64 root:\n{result.stderr[-3000:]}")
            building.rename(tarball)
            for other in cache.glob(f"{SUITE}-amd64-*.tar"):  # roots of other package lists
                if other != tarball:
                    other.unlink()
    return tarball


def unpack_root(target: Path) -> Path:
    """A fresh copy of the cached root in `target` (a test's temporary directory)."""
    tarball = root_tarball()
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(target), "-xf", str(tarball)], check=True)
    return target


def scratch_dir(prefix: str) -> Path:
    """A temporary directory for throwaway roots: in RAM (/dev/shm) when it has room, where
    unpacking, pip and removing a root take seconds instead of tens of seconds on a busy
    disk. The caller removes it (`remove`)."""
    shm = Path("/dev/shm")
    ram = shm.is_dir() and shutil.disk_usage(shm).free > 4 * 2**30
    return Path(tempfile.mkdtemp(prefix=f"edge-{prefix}-", dir=shm if ram else None))


def remove(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def wheelhouse() -> Path:
    """Every wheel the project needs to build and install on Debian 12 x86_64 (this
    interpreter's), with the simulator's extra, downloaded once per dependency list. pip's own HTTP cache is no help
    here: the proxy in front of PyPI sends no cache headers, so pip keeps nothing."""
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    requirements = [*project["build-system"]["requires"], *project["project"]["dependencies"],
                    *project["project"]["optional-dependencies"]["sim"]]
    key = hashlib.sha256(json.dumps([sys.version_info[:2], requirements]).encode()).hexdigest()[:12]
    path = cache_dir() / "wheels" / key
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".complete").exists():
            path.mkdir(parents=True, exist_ok=True)
            result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(path),
                                     *requirements], capture_output=True, text=True, env={
                                         **os.environ, "PIP_FIND_LINKS": ""})
            if result.returncode != 0:
                raise RuntimeError(f"pip could not download the project's wheels:\n{result.stderr[-3000:]}")
            (path / ".complete").touch()
            for other in path.parent.iterdir():  # other dependency lists
                if other != path:
                    shutil.rmtree(other)
    return path
