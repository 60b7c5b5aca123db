"""image/Containerfile: built with podman on a base made here (the cached mmdebstrap root,
`podman import`ed: no image registry is reachable; the Python wheels from the cached
wheelhouse, with no network while building), started with its config from the
environment and its state in a volume, healthy by its own HEALTHCHECK, and stopped cleanly
by `podman stop` (SIGTERM, exit code 0, not SIGKILL's 137).

This VM's quirks, and why the flags below exist:
- crun 1.8 (Debian 12) refuses a host whose cgroup v2 hierarchy has controllers while v1 is
  mounted too ("cgroups in hybrid mode not supported"); runc runs there, so the test uses it.
- root here lacks CAP_SYS_RESOURCE, so podman's default rlimits (raised to the maximum)
  cannot be set: the test asks for lower ones with --ulimit.

podman's storage is kept in $EDGE_CI_CACHE/containers (its run state in
/run/edge-ci-containers): the base is imported once per root tarball, and the build's layer
with the dependencies is reused until pyproject.toml changes. The test removes the image
(keeping its layers as that cache), the container and the volume it makes.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from edge.store import DB_NAME
from edge.testing.requirements import require_program
from edge.testing.waiting import wait_for
from image.debian_root import cache_dir, require_root_user, root_tarball, wheelhouse

REPO = Path(__file__).resolve().parents[2]
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
NODE = "homelab-garage"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class Podman:
    def __init__(self):
        require_root_user()
        podman = require_program("podman")
        runc = require_program("runc")
        store = cache_dir() / "containers"
        self.base = [podman, "--root", str(store / "storage"), "--runroot", "/run/edge-ci-containers",
                     "--storage-driver", "overlay", "--runtime", runc]
        self.lock = store / ".lock"
        store.mkdir(exist_ok=True)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def base_image(self) -> str:
        """The cached root as an image, imported once per tarball."""
        tarball = root_tarball()
        name = f"localhost/edge-ci-base:{tarball.stem.rsplit('-', 1)[-1]}"
        with open(self.lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self("image", "exists", name, check=False).returncode != 0:
                self("import", "--quiet", str(tarball), name, timeout=600)
        return name


@pytest.fixture
def podman():
    return Podman()


def test_container_builds_runs_healthy_with_env_config_and_stops_cleanly(podman, tmp_path):
    base = podman.base_image()
    tag = f"localhost/edge-test:{os.getpid()}"
    name = volume = f"edge-test-{os.getpid()}"
    try:
        # offline, from the cached wheelhouse: no network at all while building
        podman("build", "--format", "docker", "--network", "none", *ULIMITS,
               "--build-arg", f"BASE={base}", "--build-arg", "FACES=no",
               "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels",
               "--volume", f"{wheelhouse()}:/wheels:ro",
               "-f", str(REPO / "image" / "Containerfile"), "-t", tag, str(REPO), timeout=540)
        check = json.loads(podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", tag).stdout)
        assert check["Test"] == ["CMD", "edge", "status"]

        podman("run", "-d", "--name", name, "--network", "none", *ULIMITS, "-v", f"{volume}:/var/lib/edge",
               "-e", f"EDGE_NODE_ID={NODE}", "-e", "EDGE_FACES_ENABLED=false", tag)

        def healthy() -> bool:
            return podman("healthcheck", "run", name, check=False).returncode == 0

        def logs() -> str:
            result = podman("logs", name, check=False)
            return f"; logs:\n{(result.stdout + result.stderr)[-3000:]}"

        wait_for(healthy, timeout=90, message=lambda: "the container's HEALTHCHECK" + logs())
        assert podman("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() == "healthy"
        health = json.loads(podman("exec", name, "/opt/edge/current/bin/python", "-c",
                                   "import urllib.request; print(urllib.request.urlopen("
                                   "'http://127.0.0.1:8790/health').read().decode())").stdout)
        assert health["node"] == NODE  # the config came from the environment
        assert podman("exec", name, "id", "-un").stdout.strip() == "edge"

        podman("stop", "--time", "20", name, timeout=60)
        state = json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)
        assert state["Status"] == "exited" and state["ExitCode"] == 0, (state, logs())
        assert "stopped (exit code 0)" in logs()
        # the state lives in the volume, not in the container
        listed = podman("run", "--rm", "--network", "none", *ULIMITS, "-v", f"{volume}:/var/lib/edge", tag,
                        "ls", "/var/lib/edge").stdout.split()
        assert DB_NAME in listed, listed
    finally:
        podman("rm", "-f", "--time", "0", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)
        # --no-prune keeps the build's layers: the next run reuses the dependencies' layer;
        # a week-old one goes (to bound the cache), rebuilt by the next run
        podman("rmi", "--no-prune", tag, check=False)
        podman("image", "prune", "--force", "--filter", "until=168h", check=False)
