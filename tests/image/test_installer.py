"""image/install.sh against a throwaway Debian bookworm root (mmdebstrap, cached): a second
run changes nothing, a user's config survives, keys are made 0600, uninstall keeps the data
and purge removes it, and the installed root boots under systemd-nspawn with the real unit
until the service is READY.

The installer runs with --root, as it does for a Raspberry Pi image: it chroots into the
root in a mount namespace of its own, so nothing on this machine changes. pip's cache is
$EDGE_CI_CACHE/pip (see debian_root.py); the first run downloads the dependencies.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from edge.assembly import load_config
from edge.testing.requirements import require_program
from edge.testing.waiting import wait_for
from image.debian_root import pip_cache, remove, require_root_user, scratch_dir, unpack_root, wheelhouse

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "image"
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
# Not walked: mount points the installer or nspawn use, and apt's lists.
SKIP = {"proc", "dev", "sys", "run", "tmp"}
ACCOUNTS = {f"etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow") for suffix in ("", "-")}
# The per-device files image/cloud-init/user-data writes on a Pi's first boot; here they are
# in place before the installer runs (which then must secure the password file), plus no
# face libraries, so the test installs in seconds from pip's cache.
CLOUD_INIT = yaml.safe_load((IMAGE / "cloud-init" / "user-data").read_text())
SERVICE_ENV_EXTRA = "EDGE_FACES_ENABLED=false\n"


def cloud_init_file(path: str) -> dict:
    return next(f for f in CLOUD_INIT["write_files"] if f["path"] == path)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


# Checksums by inode and times: a file written again gets a new ctime (which no program can
# set back), so an unchanged key means unchanged content and the root is hashed only once.
_digests: dict[tuple, str] = {}


def _digest(path: str, st: os.stat_result) -> str:  # (an inode's content, whatever its name)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digests:
        with open(path, "rb") as f:
            _digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _digests[key]


def listing(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its type, mode, owner, and content checksum or link
    target: what "changes nothing" compares."""
    found: dict[str, tuple] = {}

    def walk(directory: Path, rel: str) -> None:
        for entry in os.scandir(directory):
            path = f"{rel}{entry.name}"
            if not rel and entry.name in SKIP:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(entry.path)
            elif stat.S_ISREG(st.st_mode):
                what = _digest(entry.path, st)
            else:
                what = ""
            found[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
            if stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path), path + "/")

    walk(root, "")
    return found


def changed(before: dict, after: dict) -> dict[str, tuple]:
    return {p: (before.get(p), after.get(p)) for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def install(root: Path, *args: str, image: Path = IMAGE, check: bool = True) -> subprocess.CompletedProcess:
    """install.sh --root, offline: pip takes the project's dependencies from the cached
    wheelhouse (debian_root.wheelhouse) and builds the checkout with them."""
    result = subprocess.run(["bash", str(image / "install.sh"), "--root", str(root), "--pip-cache", str(pip_cache()),
                             "--wheels", str(wheelhouse()), *args], capture_output=True, text=True, timeout=540)
    if check:
        assert result.returncode == 0, f"install.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def account(root: Path, name: str, database: str = "passwd") -> list[str] | None:
    for line in (root / "etc" / database).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


class Installed:
    def __init__(self, base: Path, root: Path, pristine: dict, first: subprocess.CompletedProcess, after_first: dict):
        self.base, self.root, self.pristine, self.first, self.after_first = base, root, pristine, first, after_first


@pytest.fixture(scope="module")
def installed():
    """A root with the project installed once from this checkout."""
    require_root_user()
    require_program("mmdebstrap")
    base = scratch_dir("installer")
    try:
        root = unpack_root(base / "root")
        (root / "etc/edge").mkdir()
        (root / "etc/edge/edge.env").write_text(cloud_init_file("/etc/edge/edge.env")["content"] + SERVICE_ENV_EXTRA)
        (root / "etc/edge/mqtt-password").write_text(cloud_init_file("/etc/edge/mqtt-password")["content"])
        pristine = listing(root)
        first = install(root)
        yield Installed(base, root, pristine, first, listing(root))
    finally:
        remove(base)


def test_cloud_init_template_sets_valid_device_values(tmp_path):
    """The values the template writes are keys the runtime accepts, and its secret is 0600."""
    assert (IMAGE / "cloud-init" / "user-data").read_text().startswith("#cloud-config\n")
    assert CLOUD_INIT["hostname"]
    lines = cloud_init_file("/etc/edge/edge.env")["content"].splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert set(env) >= {"EDGE_NODE_NAME", "EDGE_NODE_AREA", "EDGE_MQTT_HOST", "EDGE_MQTT_USERNAME",
                        "EDGE_MQTT_PASSWORD_FILE"}
    secret = cloud_init_file(env["EDGE_MQTT_PASSWORD_FILE"])
    assert (secret["owner"], secret["permissions"]) == ("edge:edge", "0600")
    (tmp_path / "password").write_text(secret["content"])
    config, _ = load_config(IMAGE / "edge.example.toml", False,
                            {**env, "EDGE_MQTT_PASSWORD_FILE": str(tmp_path / "password")})
    assert (config["node"].name, config["node"].area) == (env["EDGE_NODE_NAME"], env["EDGE_NODE_AREA"])
    assert (config["mqtt"].host, config["mqtt"].username) == (env["EDGE_MQTT_HOST"], env["EDGE_MQTT_USERNAME"])
    # the image's cloud-init reads it from the boot partition (Raspberry Pi OS labels it bootfs)
    nocloud = yaml.safe_load((IMAGE / "pi-gen/stage-edge/00-edge/files/99-edge-nocloud.cfg").read_text())
    assert nocloud["datasource_list"][0] == "NoCloud" and nocloud["datasource"]["NoCloud"]["fs_label"] == "bootfs"


def test_pigen_stage_runs_the_installer_against_the_image_root(installed):
    """pi-gen runs a sub-stage's NN-run.sh from its directory with ROOTFS_DIR set."""
    stage = IMAGE / "pi-gen" / "stage-edge"
    assert "copy_previous" in (stage / "prerun.sh").read_text() and (stage / "EXPORT_IMAGE").exists()
    packages = (stage / "00-edge" / "00-packages-nr").read_text().split()
    assert {"python3-venv", "python3-picamera2", "python3-lgpio", "cloud-init"} <= set(packages)
    before = listing(installed.root)
    env = {**os.environ, "ROOTFS_DIR": str(installed.root), "EDGE_PIP_CACHE": str(pip_cache()),
           "EDGE_WHEELS": str(wheelhouse())}
    try:
        result = subprocess.run(["bash", "./01-run.sh"], cwd=stage / "00-edge", env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"release {VERSION} is already installed" in result.stdout  # the installer ran, with --root
        added = changed(before, listing(installed.root))
        assert set(added) == {"etc/cloud", "etc/cloud/cloud.cfg.d", "etc/cloud/cloud.cfg.d/99-edge-nocloud.cfg",
                              "etc/cloud/ds-identify.cfg"}, sorted(added)
    finally:
        shutil.rmtree(installed.root / "etc/cloud", ignore_errors=True)  # (the root has no cloud-init)


def test_installer_is_shellcheck_clean():
    shellcheck = require_program("shellcheck")
    stage = IMAGE / "pi-gen" / "stage-edge"
    # (EXPORT_IMAGE too: pi-gen sources it)
    result = subprocess.run([shellcheck, "-s", "bash", str(IMAGE / "install.sh"), str(stage / "prerun.sh"),
                             str(stage / "00-edge" / "01-run.sh"), str(stage / "EXPORT_IMAGE")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_and_wrong_options_say_what_to_do():
    result = subprocess.run(["bash", str(IMAGE / "install.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--uninstall" in result.stdout and "--root DIR" in result.stdout
    for args, message in ((["--bogus"], "unknown option: --bogus"), (["--purge"], "--purge goes with --uninstall"),
                          (["--root"], "--root needs a directory")):
        result = subprocess.run(["bash", str(IMAGE / "install.sh"), *args], capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    require_root_user()
    result = subprocess.run(["bash", str(IMAGE / "install.sh"), "--root", "/nonexistent/edge-root"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "is not a directory" in result.stderr


def test_first_install_lays_out_a_release_config_user_unit_and_rules(installed):
    root, after = installed.root, installed.after_first
    release = f"opt/edge/releases/{VERSION}"
    assert after["opt/edge/current"][4] == f"releases/{VERSION}"
    assert after[f"{release}/bin/edge"][0] == stat.S_IFREG
    assert after[f"{release}/pyvenv.cfg"]  # a venv of its own
    # Debian, not Raspberry Pi OS: no system site-packages (nothing but picamera2 needs them)
    assert "include-system-site-packages = false" in (root / release / "pyvenv.cfg").read_text()
    assert after["usr/local/bin/edge"][4] == "/opt/edge/current/bin/edge"
    user = account(root, "edge")
    assert user and user[5] == "/var/lib/edge" and user[6] == "/usr/sbin/nologin"
    uid, gid = int(user[2]), int(user[3])
    for group in ("gpio", "video", "dialout", "audio"):
        assert "edge" in account(root, group, "group")[3].split(","), group
    # a secret the config names (here through edge.env): the service's user's only
    assert after["etc/edge/mqtt-password"][1:4] == (0o600, uid, gid)
    example = hashlib.sha256((IMAGE / "edge.example.toml").read_bytes()).hexdigest()
    assert after["etc/edge/edge.toml"] == (stat.S_IFREG, 0o640, 0, gid, example)
    assert after["var/lib/edge"][1:4] == (0o700, uid, gid)
    unit = hashlib.sha256((IMAGE / "edge.service").read_bytes()).hexdigest()
    assert after["etc/systemd/system/edge.service"] == (stat.S_IFREG, 0o644, 0, 0, unit)
    assert after["etc/systemd/system/multi-user.target.wants/edge.service"][4] == "/etc/systemd/system/edge.service"
    rules = hashlib.sha256((IMAGE / "99-edge.rules").read_bytes()).hexdigest()
    assert after["etc/udev/rules.d/99-edge.rules"][4] == rules
    # the example asks for the picamera2 backend, which Debian's archive does not have
    assert "python3-picamera2, which only Raspberry Pi OS offers" in installed.first.stderr


def test_unit_verifies_inside_the_installed_root(installed):
    analyze = require_program("systemd-analyze", "systemd")
    result = subprocess.run([analyze, "verify", f"--root={installed.root}", "/etc/systemd/system/edge.service"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_run_changes_nothing(installed):
    before = listing(installed.root)
    result = install(installed.root)
    assert changed(before, listing(installed.root)) == {}
    assert f"release {VERSION} is already installed" in result.stdout
    assert not re.search(r"created|made|wrote|installed /|linked|enabled", result.stdout), result.stdout


def test_edited_config_survives_and_a_changed_example_is_left_beside_it(installed, tmp_path):
    root = installed.root
    config = root / "etc/edge/edge.toml"
    edited = config.read_text().replace('name = "Front door"', 'name = "Back door"').replace(
        '# key_file = "/etc/edge/audit.key"', 'key_file = "/etc/edge/audit.key"')
    assert 'key_file = "/etc/edge/audit.key"' in edited
    config.write_text(edited)
    install(root)
    assert config.read_text() == edited and not (root / "etc/edge/edge.toml.new").exists()
    # the audit key the config names: made once, 64 hex digits, readable by the service only
    key = root / "etc/edge/audit.key"
    user = account(root, "edge")
    st = key.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, int(user[2]), int(user[3]))
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text())

    image = tmp_path / "image"
    shutil.copytree(IMAGE, image)
    new_example = (IMAGE / "edge.example.toml").read_text() + "\n# a setting a newer release documents\n"
    (image / "edge.example.toml").write_text(new_example)
    result = install(root, "--from", str(REPO), image=image)
    assert config.read_text() == edited
    assert (root / "etc/edge/edge.toml.new").read_text() == new_example
    assert "edge.toml.new" in result.stdout
    before = listing(root)
    install(root, "--from", str(REPO), image=image)
    assert changed(before, listing(root)) == {}


def test_the_enabled_features_decide_the_debian_packages(installed):
    """Raspberry Pi OS (pi-gen writes /etc/rpi-issue): the example's picamera2 camera and the
    doorbell's GPIO need apt's python3-picamera2 and python3-lgpio; the intercom, enabled
    through edge.env as cloud-init would, needs baresip-core. With --no-apt their absence is
    a failure that names them, and the config's warnings are passed on."""
    marker, env_file = installed.root / "etc/rpi-issue", installed.root / "etc/edge/edge.env"
    service_env = env_file.read_text()
    marker.write_text("Raspberry Pi reference (test)\n")
    env_file.write_text(service_env + "EDGE_SIP_ENABLED=true\nEDGE_SIP_REGISTRAR=pbx.lan:5060\nEDGE_SIP_USERNAME=door\n")
    try:
        result = install(installed.root, "--no-apt", check=False)
        assert result.returncode != 0
        assert "needs the Debian packages python3-picamera2 python3-lgpio baresip-core" in result.stderr, \
            result.stderr
        assert "--no-apt" in result.stderr
        assert "warning: [sip] targets: empty" in result.stderr
    finally:
        marker.unlink()
        env_file.write_text(service_env)


def test_a_config_the_release_rejects_fails_the_install_with_the_problem(installed):
    config = installed.root / "etc/edge/edge.toml"
    good = config.read_text()
    try:
        assert "cooldown_s = 3" in good
        config.write_text(good.replace("cooldown_s = 3", 'cooldown_s = "three"'))
        result = install(installed.root, check=False)
        assert result.returncode != 0
        assert "edge install FAILED: /etc/edge/edge.toml is not valid" in result.stderr
        assert "cooldown_s" in result.stderr and "run the installer again" in result.stderr
    finally:
        config.write_text(good)


PROBE = """#!/bin/sh
# Run by edge-probe.service, ordered after edge.service: so edge.service has started, which
# for Type=notify means READY=1 arrived.
systemctl show edge.service -p ActiveState -p SubState -p NRestarts -p ExecStartPre >/probe/state
/usr/local/bin/edge status >/probe/status 2>&1
# The installer again, on this running system (no --root): systemctl, no release to install.
before=$(systemctl show edge.service -p MainPID --value)
bash /src/image/install.sh >/probe/live.out 2>&1
echo $? >/probe/live.rc
echo "$before $(systemctl show edge.service -p MainPID --value)" >/probe/pids
# and --uninstall there: the service stopped and disabled, the config kept
bash /src/image/install.sh --uninstall >/probe/uninstall.out 2>&1
echo $? >/probe/uninstall.rc
{ systemctl is-active edge.service; ls /etc/systemd/system /etc/systemd/system/multi-user.target.wants /etc/edge
} >/probe/uninstalled 2>&1
touch /probe/done
systemctl poweroff
"""


def test_installed_root_boots_and_the_service_reaches_ready(installed, tmp_path):
    """The real unit (hardening, User=edge, Type=notify, the boot check) under systemd in the
    installed root, then the installer run again on that live system, which must neither
    fail nor restart the running service, and --uninstall there, which stops it. The root is
    volatile (an overlay thrown away) and has only a loopback network."""
    nspawn = require_program("systemd-nspawn", "systemd-container")
    out = tmp_path / "out"
    out.mkdir()
    (out / "probe.sh").write_text(PROBE)
    unit = tmp_path / "edge-probe.service"
    unit.write_text("[Unit]\nAfter=edge.service\n[Service]\nType=oneshot\nExecStart=/bin/sh /probe/probe.sh\n")
    log = open(tmp_path / "console.log", "wb")
    proc = subprocess.Popen([nspawn, "-q", "-D", str(installed.root), "--volatile=overlay", "--private-network",
                             "--register=no", "--keep-unit", "--console=pipe", f"--bind={out}:/probe",
                             f"--bind-ro={unit}:/etc/systemd/system/edge-probe.service", f"--bind-ro={REPO}:/src",
                             "--boot", "systemd.firstboot=off", "systemd.wants=edge-probe.service"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def console() -> str:
            return f"; console:\n{(tmp_path / 'console.log').read_text(errors='replace')[-3000:]}"
        wait_for(lambda: (out / "done").exists() or proc.poll() is not None, timeout=120,
                 message=lambda: "the probe after edge.service" + console())
        state = (out / "state").read_text() if (out / "state").exists() else ""
        assert "ActiveState=active" in state and "SubState=running" in state, state + console()
        assert "NRestarts=0" in state
        # the unit's boot check (roll back an interrupted update) ran, and found nothing to do
        assert re.search(r"ExecStartPre=.*edge update --boot-check.*code=exited ; status=0 }", state), state
        status = (out / "status").read_text()
        assert "store" in status and "OK" in status, status

        live = (out / "live.out").read_text()
        assert (out / "live.rc").read_text().strip() == "0", live
        assert f"release {VERSION} is already installed" in live and "FAILED" not in live, live
        assert "running: systemctl status edge" in live, live  # the live branch: systemctl, not --root
        before, after = (out / "pids").read_text().split()
        assert before == after != "0", "the installer restarted the running service: " + live
        assert (out / "uninstall.rc").read_text().strip() == "0", (out / "uninstall.out").read_text()
        uninstalled = (out / "uninstalled").read_text().split()
        assert uninstalled[0] == "inactive" and "edge.toml" in uninstalled, uninstalled
        assert "edge.service" not in uninstalled, uninstalled  # the unit and its wants link
        wait_for(lambda: proc.poll() is not None, timeout=60, message=lambda: "poweroff" + console())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_uninstall_keeps_the_data_and_purge_removes_it_with_only_the_groups_the_installer_created(installed):
    root = installed.base / "uninstalled"
    # Hard links: a copy in a second, and the uninstaller only unlinks files or replaces them
    # (userdel writes the account files anew), so the shared root stays as it was.
    subprocess.run(["cp", "-al", str(installed.root), str(root)], check=True)
    try:
        result = install(root, "--uninstall")
        assert "kept /etc/edge, /var/lib/edge" in result.stdout
        left = changed(installed.pristine, listing(root))
        data = {p for p in left if p.startswith(("etc/edge", "var/lib/edge"))}
        assert set(left) - data - ACCOUNTS == set(), sorted(set(left) - data - ACCOUNTS)
        assert "var/lib/edge" in data and (root / "etc/edge/edge.toml").exists() and account(root, "edge")

        # what the installer created, noted for --purge: Debian has no gpio group (Raspberry
        # Pi OS has, and then it is not the installer's)
        assert (root / "etc/edge/installer-created").read_text().split("\n") == ["group gpio", "user edge", ""]
        # meanwhile the gpio group became another user's primary group: groupdel cannot remove
        # it, the purge stops saying so and keeps the record, and a run after the fix finishes
        chroot = ["chroot", str(root)]
        subprocess.run([*chroot, "useradd", "--system", "--no-log-init", "--gid", "gpio", "printerbot"], check=True)
        result = install(root, "--uninstall", "--purge", check=False)
        assert result.returncode != 0 and "groupdel could not remove the group gpio" in result.stderr, result.stderr
        assert "run --uninstall --purge again" in result.stderr
        assert (root / "etc/edge/installer-created").exists() and account(root, "edge") is None
        subprocess.run([*chroot, "userdel", "printerbot"], check=True)
        result = install(root, "--uninstall", "--purge")
        assert "what the installer created: group gpio" in result.stdout, result.stdout
        left = changed(installed.pristine, listing(root))
        assert set(left) - ACCOUNTS == {"etc/edge", "etc/edge/edge.env", "etc/edge/mqtt-password"}, \
            sorted(set(left) - ACCOUNTS)
        assert not (root / "etc/edge").exists() and not (root / "var/lib/edge").exists()
        assert account(root, "edge") is None and account(root, "edge", "group") is None
        # the gpio group it made is gone; video, dialout and audio were there before and stay,
        # without the edge user: the account files are as they were before the install
        assert account(root, "gpio", "group") is None
        assert all(account(root, group, "group") for group in ("video", "dialout", "audio"))
        assert {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} & set(left) == set(), \
            {p: left[p] for p in {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} & set(left)}
    finally:
        remove(root)
