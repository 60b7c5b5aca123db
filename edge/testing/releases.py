"""Real, small releases for testing updates: `build_release` makes a release archive (a venv
with its own `edge` program and its own version, built for `<prefix>/releases/<version>`,
plus `release.json`) and its `.sha256` file, in well under a second and without
downloading anything: the venv has no packages of its own; a `.pth` file adds this
installation's site-packages (so the code under test is what runs) and the release's own
dist-info comes first, so `edge --version` and `/health` say the release's version.

`behaviour` makes a bad release: "crash" (`edge run` exits 1 at once), "hang" (`edge run`
never answers), "migrate-and-fail" (`edge run` migrates the store with a table of its own,
then its critical worker crashes, so it never becomes ready).

`build_wheel` makes a real wheel of this project with another version (`pip wheel` of a
copy of the source tree), for updates that install a wheel with pip.

`install_first` puts a release in place as the installer does (current and committed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
import venv
from importlib.metadata import distributions
from pathlib import Path
from typing import Mapping

from edge.releases import ReleaseLayout
from edge.store import Schema
from edge.worker import Worker, WorkerContext

BEHAVIOURS = {
    "good": "",
    "crash": "if sys.argv[1:2] == ['run']:\n    sys.exit('this release crashes at start')\n",
    "hang": "if sys.argv[1:2] == ['run']:\n    import signal\n    while True:\n        signal.pause()\n",
    "migrate-and-fail": "os.environ['EDGE_RUNTIME_PLUGINS'] = 'edge.testing.releases:MigratesThenFails'\n",
}


class MigratesThenFails(Worker):
    """A critical worker whose release adds a table to the store and then cannot run."""

    name = "migrates_then_fails"
    critical = True
    schemas = (Schema("trial_release", ("CREATE TABLE trial_rows (id INTEGER PRIMARY KEY, note TEXT);",)),)

    def run(self, ctx: WorkerContext) -> None:
        raise RuntimeError("this release's worker fails after migrating the store")


def build_release(prefix: Path, version: str, out_dir: Path, behaviour: str = "good") -> Path:
    """A release archive `out_dir/edge-<version>.tar.gz` (with its .sha256 beside it)."""
    final = ReleaseLayout(prefix).release(version)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / version
        venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
        packages = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        ours = Path(site.getsitepackages()[0])
        # this installation's own metadata (not a stale egg-info a source tree may hold)
        dist = next(d for d in distributions(path=[str(ours)]) if d.metadata["Name"] == "edge-appliance")
        info = packages / f"edge_appliance-{version}.dist-info"
        info.mkdir()
        metadata = "".join(f"Version: {version}\n" if line.startswith("Version:") else line
                           for line in dist.read_text("METADATA").splitlines(keepends=True))
        (info / "METADATA").write_text(metadata)
        (info / "entry_points.txt").write_text(dist.read_text("entry_points.txt") or "")
        (packages / "zz_edge_under_test.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
        edge = root / "bin" / "edge"
        edge.write_text(f"#!{final}/bin/python\nimport os, sys\n{BEHAVIOURS[behaviour]}"
                        f"from edge.cli import main\nsys.exit(main())\n")
        edge.chmod(0o755)
        (root / "release.json").write_text(json.dumps({"version": version}))
        out_dir.mkdir(parents=True, exist_ok=True)
        archive = out_dir / f"edge-{version}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(root.iterdir()):
                tar.add(path, arcname=path.name)
    return _with_checksum(archive)


def _with_checksum(artifact: Path) -> Path:
    """Writes `<artifact>.sha256` as sha256sum does; returns `artifact`."""
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    artifact.with_name(artifact.name + ".sha256").write_text(f"{digest}  {artifact.name}\n")
    return artifact


def pip_env_without_config(environ: Mapping[str, str] = os.environ, **extra: str) -> dict[str, str]:
    """`environ` for a pip that reads no configuration (no pip.conf, no PIP_* index or
    wheel folders of this machine): it finds only what its command line and `extra` give."""
    env = {k: v for k, v in environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, **extra}


def build_wheel(version: str, out_dir: Path, find_links: Path) -> Path:
    """`out_dir/edge_appliance-<version>-py3-none-any.whl` (with its .sha256), built by pip
    from a copy of this checkout with `version` in its pyproject.toml; the build backend
    (setuptools) comes from the wheels in `find_links`, without a package index."""
    source = Path(__file__).resolve().parents[2]
    if not (source / "pyproject.toml").is_file():
        raise RuntimeError(f"no checkout around {source}: a wheel is built from the source tree (pip install -e .)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(
            ".venv", ".git", ".ci", "tests", "image", "build", "__pycache__", "*.egg-info"))
        pyproject = copy / "pyproject.toml"
        text, found = re.subn(r'^version = "[^"]*"', f'version = "{version}"', pyproject.read_text(), count=1,
                              flags=re.M)
        if not found:
            raise RuntimeError(f"no `version = \"...\"` line in {source / 'pyproject.toml'}")
        pyproject.write_text(text)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                               "--find-links", str(find_links), "--wheel-dir", str(out_dir), str(copy)],
                              capture_output=True, text=True, env=pip_env_without_config(), timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"pip could not build a wheel of {source}:\n{done.stderr[-2000:]}")
    wheel = out_dir / f"edge_appliance-{version}-py3-none-any.whl"
    if not wheel.is_file():
        raise RuntimeError(f"pip built no {wheel.name} in {out_dir}: {sorted(p.name for p in out_dir.iterdir())}")
    return _with_checksum(wheel)


def install_first(prefix: Path, archive: Path) -> str:
    """Install `archive` as the device's only release, current and committed."""
    from edge import release_install

    layout = ReleaseLayout(prefix)
    version = release_install.install(layout, release_install.fetch(str(archive), None, prefix / "downloads"))
    layout.switch_current(version)
    layout.commit(version)
    return version
