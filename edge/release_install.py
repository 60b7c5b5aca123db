"""Installing a release next to the running one: fetch (a file or an http(s) URL), verify its
SHA-256, unpack or pip-install it into `<prefix>/releases/<version>`, and check that the
new release's `edge` starts at all (`edge --version` names the version) before anything is
switched.

Two artifact kinds:
- a release archive (`.tar.gz`, `.tgz`, `.tar`): a release tree built for
  `<prefix>/releases/<version>` (a venv with `bin/edge`) with `release.json`
  (`{"version": "1.2.0"}`) at its top, as Mender and balena ship whole payloads; nothing is
  downloaded on the device;
- a wheel (`edge_appliance-1.2.0-py3-none-any.whl`): a new venv made like the current
  release's (with system site-packages when it has them: python3-picamera2 comes from apt
  on Raspberry Pi OS) and `pip install` of the wheel with `[update] pip_args`. A wheel
  carries only this project: its dependencies come from a package index, or offline from
  a folder of wheels (`pip_args = ["--no-index", "--find-links", DIR]`); when pip finds
  neither, the error says so.

The checksum comes from `--sha256`, from a `<artifact>.sha256` file beside it (sha256sum's
format), or from the update feed; without one nothing is installed.

A release being unpacked carries a marker file until it is complete, so a power cut
mid-install leaves no half release that looks installed.

Not responsible for: switching, restarting or committing (edge.update).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.releases import INCOMPLETE, ReleaseError, ReleaseLayout, check_version, sync_dir

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
WHEEL_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
CHUNK = 1 << 16
# (what, done bytes, total bytes or 0); (what, 0, 0) is a step without a size, shown as it is.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    source: str  # what the person gave (file or URL)


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


def _sidecar_checksum(text: str, name: str) -> str:
    """The hash from sha256sum-style text ("<hex>  <name>"; a bare hash is fine too)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]) and (len(parts) == 1 or
                                                                      parts[-1].lstrip("*") == name):
            return parts[0].lower()
    raise ReleaseError(f"no SHA-256 for {name} in its .sha256 file (expected \"<64 hex digits>  {name}\")")


def _download(url: str, target: Path, progress: Progress | None, timeout: float = 30.0) -> None:
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress("downloading", done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise ReleaseError(f"cannot download {url} ({getattr(exc, 'reason', exc)}); check the URL and the "
                           f"network, or download it and give the file") from None
    tmp.replace(target)


def _fetch_text(url: str, timeout: float = 30.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read(1 << 16).decode()
    except (urllib.error.URLError, OSError, TimeoutError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"cannot read {url} ({getattr(exc, 'reason', exc)})") from None


def fetch(source: str, sha256: str | None, downloads: Path, progress: Progress | None = None) -> Artifact:
    """The artifact as a local file with its expected checksum (not verified yet)."""
    name = Path(urllib.parse.urlparse(source).path).name if _is_url(source) else Path(source).name
    if _is_url(source):
        downloads.mkdir(parents=True, exist_ok=True)
        path = downloads / name
        if not sha256:
            sha256 = _sidecar_checksum(_fetch_text(source + ".sha256"), name)
        _download(source, path, progress)
    else:
        path = Path(source)
        if not path.is_file():
            raise ReleaseError(f"no such file {source}; give a release archive (.tar.gz) or a wheel (.whl), "
                               f"or an http(s) URL")
        sidecar = path.with_name(path.name + ".sha256")
        if not sha256 and sidecar.is_file():
            sha256 = _sidecar_checksum(sidecar.read_text(), name)
    if not sha256:
        raise ReleaseError(f"no checksum for {name}: pass --sha256 <hex> or put {name}.sha256 (sha256sum's output) "
                           f"beside it; nothing unverified is installed")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ReleaseError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    return Artifact(path, sha256.lower(), source)


def verify(artifact: Artifact, progress: Progress | None = None) -> None:
    digest = hashlib.sha256()
    total, done = artifact.path.stat().st_size, 0
    with open(artifact.path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress("verifying", done, total)
    if digest.hexdigest() != artifact.sha256:
        raise ReleaseError(f"{artifact.source}: SHA-256 is {digest.hexdigest()}, expected {artifact.sha256}; the file "
                           f"is damaged or not the release you meant; nothing was installed")


def artifact_version(path: Path) -> str:
    name = path.name
    if name.endswith(".whl"):
        match = WHEEL_RE.match(name)
        if not match:
            raise ReleaseError(f"{name} is not a wheel file name (name-version-python-abi-platform.whl)")
        return check_version(match["version"])
    if name.endswith(ARCHIVE_SUFFIXES):
        try:
            with tarfile.open(path) as tar:
                member = tar.extractfile("release.json")
                data = json.loads(member.read(1 << 16)) if member else {}
        except (tarfile.TarError, KeyError, ValueError, OSError) as exc:
            raise ReleaseError(f"{name} is not a release archive ({exc}); it needs release.json with "
                               f"{{\"version\": ...}} at its top") from None
        return check_version(data.get("version") if isinstance(data, dict) else None)
    raise ReleaseError(f"{name}: give a release archive ({', '.join(ARCHIVE_SUFFIXES)}) or a wheel (.whl)")


def install(layout: ReleaseLayout, artifact: Artifact, pip_args: list[str] = (),
            progress: Progress | None = None, packages: list[str] = ()) -> str:
    """Install the verified artifact as releases/<version>; returns the version. A wheel is
    installed together with `packages` (what the device's features need beyond the wheel's
    own dependencies)."""
    verify(artifact, progress)
    version = artifact_version(artifact.path)
    target = layout.release(version)
    if version in (layout.current(), layout.committed()):
        raise ReleaseError(f"release {version} is already installed and in use; nothing to do "
                           f"(`edge update --status`)")
    layout.releases.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)  # an older copy or a half install of the same version
    target.mkdir()
    (target / INCOMPLETE).write_text("being installed\n")
    try:
        if artifact.path.name.endswith(".whl"):
            _install_wheel(target, artifact.path, pip_args, _has_system_site(layout), packages, progress)
        else:
            with tarfile.open(artifact.path) as tar:
                # "tar" refuses members outside the target and absolute paths, yet keeps the
                # venv's symlink to its interpreter (the "data" filter would refuse that one)
                tar.extractall(target, filter="tar")
        _check_starts(target, version)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # a failed install leaves no half release behind
        raise
    (target / INCOMPLETE).unlink()
    sync_dir(target)
    return version


def adopt(layout: ReleaseLayout, directory: Path) -> str:
    """A release directory already installed under releases/ (image/install.sh puts a new
    one there beside the running one, and has run its code already: it loads the config
    with the release's own Python); returns its version."""
    if directory.resolve().parent != layout.releases.resolve() or directory.name not in layout.versions():
        raise ReleaseError(f"{directory} is not a complete release in {layout.releases}; give a release archive, "
                           f"a wheel or a URL")
    version = check_version(directory.name)
    if version in (layout.current(), layout.committed()):
        raise ReleaseError(f"release {version} is already in use; nothing to do (`edge update --status`)")
    return version


def _has_system_site(layout: ReleaseLayout) -> bool:
    """Whether the current release's venv sees the system's site-packages (the installer
    gives it them on Raspberry Pi OS only); without a readable pyvenv.cfg, yes."""
    current = layout.current()
    try:
        cfg = (layout.release(current) / "pyvenv.cfg").read_text() if current else ""
    except OSError:
        cfg = ""
    match = re.search(r"^include-system-site-packages\s*=\s*(\w+)", cfg, re.M)
    return match is None or match[1].lower() == "true"


def _install_wheel(target: Path, wheel: Path, pip_args: list[str], system_site: bool,
                   packages: list[str], progress: Progress | None = None) -> None:
    """A venv for the release, then pip's install of the wheel and `packages` into it.
    pip's own lines ("Collecting ...", "Installing collected packages ...") are the
    progress: on a Pi, building the venv and installing dlib-bin take minutes."""
    python = getattr(sys, "_base_executable", None) or sys.executable
    steps = (("creating the release's venv", [python, "-m", "venv", *(["--system-site-packages"] if system_site
                                                                        else []), str(target)]),
             ("pip", [str(target / "bin" / "pip"), "install", "--no-input", "--disable-pip-version-check",
                      "--progress-bar", "off", *pip_args, *packages, str(wheel)]))
    for what, cmd in steps:
        if progress:
            progress(f"installing {wheel.name}: {what}", 0, 0)
        lines = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                lines.append(line)
                if progress and line.strip():
                    progress(f"{what}: {line.strip()}", 0, 0)
        if proc.returncode != 0:
            said = "".join(lines).strip()
            missing = re.search(r"No matching distribution found for (\S+)", said)
            if missing:
                raise ReleaseError(
                    f"installing {wheel.name} needs {missing[1]}, which pip found in no package index and no wheel "
                    f"folder (is the device offline?). A wheel brings only edge itself, not what it needs: give "
                    f"the device a folder of wheels (`pip download -d DIR {' '.join([wheel.name, *packages])}` on a "
                    f"machine with network, "
                    f"with --platform and --python-version of the device) and set [update] pip_args = "
                    f"[\"--no-index\", \"--find-links\", \"DIR\"], or update with a release archive (.tar.gz), "
                    f"which carries everything; nothing was installed. pip said: {said[-400:]}")
            raise ReleaseError(f"installing {wheel.name} failed: `{' '.join(cmd)}` said: {said[-800:]}")


def _check_starts(target: Path, version: str) -> None:
    """`bin/edge --version` must answer with the version: a release that cannot even import
    is refused here, before the device goes down for it."""
    edge = target / "bin" / "edge"
    if not os.access(edge, os.X_OK):
        raise ReleaseError(f"the release has no executable bin/edge ({edge}); was it built for "
                           f"{target.parent}/<version>?")
    try:
        done = subprocess.run([str(edge), "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReleaseError(f"the new release's `edge --version` did not run ({exc})") from None
    if done.returncode != 0 or version not in done.stdout:
        raise ReleaseError(f"the new release's `edge --version` said {(done.stdout + done.stderr).strip()[-300:]!r}, "
                           f"not version {version}; nothing was switched")
