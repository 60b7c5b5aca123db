"""Real, small releases for testing updates: `build_release` makes a release archive (a venv
with its own `edge` program and its own version, built for `<prefix>/releases/<version>`,
plus `release.json`) and its `.sha256` file, in well under a second and without
downloading anything: the venv has no packages of its own; a `.pth` file adds this
installation's site-packages (so the code under test is what runs) and the release's own
dist-info comes first, so `edge --version` and `/health` say the release's version.

`behaviour` makes a bad release: "crash" (`edge run` exits 1 at once), "hang" (`edge run`
never answers), "migrate-and-fail" (`edge run` migrates the store with a table of its own,
then its critical worker crashes, so it never becomes ready).

`install_first` puts a release in place as the installer does (current and committed).
"""

from __future__ import annotations

import hashlib
import json
import site
import sys
import tarfile
import tempfile
import venv
from importlib.metadata import distributions
from pathlib import Path

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
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    return archive


def install_first(prefix: Path, archive: Path) -> str:
    """Install `archive` as the device's only release, current and committed."""
    from edge import release_install

    layout = ReleaseLayout(prefix)
    version = release_install.install(layout, release_install.fetch(str(archive), None, prefix / "downloads"))
    layout.switch_current(version)
    layout.commit(version)
    return version
