#!/usr/bin/env bash
# Installs (or removes) the edge runtime on Raspberry Pi OS or Debian: on the running system,
# or into a mounted image or chroot with --root DIR (then nothing needs a running systemd).
# Safe to run again: a second run changes nothing.
#
# Layout (shared with `edge update`, which switches releases with health checks and rollback):
#   /opt/edge/releases/<version>/   one venv per release, never changed once complete
#   /opt/edge/current               symlink to releases/<version>, switched atomically
#   /etc/edge/                      edge.toml, edge.env (EDGE_* overrides), keys 0600
#   /var/lib/edge/                  state (the store, faces, ...), owned by the `edge` user
# Run `image/install.sh --help` for the options.
# About 520 lines, one script on purpose: install, uninstall and purge share the paths above
# and the record of what was created, and an administrator reads one install top to bottom
# before running it as root.
set -Eeuo pipefail

PREFIX=/opt/edge
CONFIG_DIR=/etc/edge
STATE_DIR=/var/lib/edge
UNIT=/etc/systemd/system/edge.service
WANTS=/etc/systemd/system/multi-user.target.wants/edge.service
# Home Assistant's update "Install" button: a path unit that runs `edge update --requested`.
UPDATE_PATH=/etc/systemd/system/edge-update.path
UPDATE_SERVICE=/etc/systemd/system/edge-update.service
UPDATE_WANTS=/etc/systemd/system/paths.target.wants/edge-update.path
RULES=/etc/udev/rules.d/99-edge.rules
LINK=/usr/local/bin/edge
USER_NAME=edge
# The accounts this installer created ("user edge", "group gpio"), one a line: --purge
# removes those and nothing else (Raspberry Pi OS's own gpio group stays). In the config
# directory, so it outlives a plain --uninstall.
CREATED=/etc/edge/installer-created
# Device groups the service joins (SupplementaryGroups= in edge.service, udev rules here).
DEVICE_GROUPS=(gpio video dialout audio)
BASE_PACKAGES=(python3 python3-venv)
PATH_IN_ROOT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Passed into the root, so pip can reach its index the way this shell does.
# (PIP_CERT names a file inside the root.)
PASS_ENV=(http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_EXTRA_INDEX_URL
          PIP_CERT PIP_DEFAULT_TIMEOUT)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
Usage: install.sh [--root DIR] [--from WHEEL|CHECKOUT] [--no-apt] [--pip-cache DIR] [--wheels DIR]
       install.sh [--root DIR] --uninstall [--purge]

Installs the edge runtime: the '$USER_NAME' user, a release venv in $PREFIX/releases/<version>
(with the system's site-packages on Raspberry Pi OS, for apt's python3-picamera2), the
Debian packages the configured features need, $CONFIG_DIR/edge.toml from the example when it
is absent (a changed example is left beside it as edge.toml.new), udev rules, the systemd
unit, enabled. Running it again changes nothing.

  --root DIR        install into the system mounted at DIR (an image or chroot); uses
                    chroot and needs no running systemd there
  --from SOURCE     a wheel (edge_appliance-<version>-*.whl) or a checkout
                    (default: the checkout this script is in)
  --no-apt          never run apt-get: fail, naming them, if packages are missing
  --pip-cache DIR   pip's cache, for builders that run often
  --wheels DIR      install from the wheels in DIR only, without a package index (offline
                    and repeatable; fill it with \`pip download -d DIR ...\` for the target)
  --uninstall       remove the runtime, unit, rules and links; keep $CONFIG_DIR, $STATE_DIR
                    and the user
  --purge           with --uninstall: also remove $CONFIG_DIR, $STATE_DIR, and the user and
                    groups this installer created (groups that were there before stay)
  -h, --help        this text

The features come from the config as the service sees it: $CONFIG_DIR/edge.toml with the
EDGE_<SECTION>_<KEY> lines of $CONFIG_DIR/edge.env on top ([faces] enabled: the face
libraries; [camera] backend = "picamera2": python3-picamera2; [sip] enabled: baresip-core;
[mqtt] enabled: mosquitto-clients).
EOF
}

say() { printf 'edge install: %s\n' "$*"; }
warn() { printf 'edge install: warning: %s\n' "$*" >&2; }
die() { printf 'edge install FAILED: %s\n' "$*" >&2; exit 1; }
failed() {
    local rc=$? line=$1 command=$2
    printf 'edge install FAILED (exit %d) at line %d: %s\n' "$rc" "$line" "$command" >&2
    exit "$rc"
}
trap 'failed "$LINENO" "$BASH_COMMAND"' ERR

# --- options -----------------------------------------------------------------------------

root=/ source="" apt=yes pip_cache="" wheels="" action=install purge=no
args=("$@")
while (($#)); do
    case $1 in
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; root=$2; shift 2 ;;
        --root=*) root=${1#*=}; shift ;;
        --from) [[ $# -ge 2 ]] || die "--from needs a wheel or a checkout"; source=$2; shift 2 ;;
        --from=*) source=${1#*=}; shift ;;
        --no-apt) apt=no; shift ;;
        --pip-cache) [[ $# -ge 2 ]] || die "--pip-cache needs a directory"; pip_cache=$2; shift 2 ;;
        --pip-cache=*) pip_cache=${1#*=}; shift ;;
        --wheels) [[ $# -ge 2 ]] || die "--wheels needs a directory"; wheels=$2; shift 2 ;;
        --wheels=*) wheels=${1#*=}; shift ;;
        --uninstall) action=uninstall; shift ;;
        --purge) purge=yes; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1 (see --help)" ;;
    esac
done
[[ $purge == no || $action == uninstall ]] || die "--purge goes with --uninstall"
[[ $(id -u) == 0 ]] || die "run as root (sudo $0 ${args[*]})"
[[ -d $root ]] || die "--root $root is not a directory"
root=$(cd "$root" && pwd -P)
[[ $root == / ]] && R="" || R=$root
live() { [[ -z $R ]]; }
[[ -f $R/etc/os-release ]] || die "$root does not look like a Debian system (no /etc/os-release)"
[[ -z $pip_cache || -d $pip_cache ]] || die "--pip-cache $pip_cache is not a directory"
[[ -z $wheels || -d $wheels ]] || die "--wheels $wheels is not a directory"
pip_env=()  # for every pip run, on the target's side of a --root

# --- inside a private mount namespace for --root -------------------------------------------

# /proc, /dev, a /tmp of its own and pip's cache are mounted into the root only in this
# process's mount namespace: they are gone when the installer ends, even after a failure.
if ! live && [[ -z ${EDGE_INSTALL_NAMESPACE:-} ]]; then
    command -v unshare >/dev/null || die "unshare (util-linux) is needed for --root"
    exec unshare --mount --propagation private -- env EDGE_INSTALL_NAMESPACE=1 bash "${BASH_SOURCE[0]}" "${args[@]}"
fi
if ! live; then
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
    # Name resolution for pip and apt: the host's, without changing the root's own file.
    if [[ -e $R/etc/resolv.conf || -L $R/etc/resolv.conf ]] && [[ -f /etc/resolv.conf ]]; then
        resolv=$(readlink -f "$R/etc/resolv.conf" 2>/dev/null || true)
        [[ $resolv == "$R"/* && -f $resolv ]] && mount --bind /etc/resolv.conf "$resolv"
    fi
    if [[ -n $pip_cache ]]; then
        mkdir -p "$R/tmp/pip-cache"
        mount --bind "$pip_cache" "$R/tmp/pip-cache"
        pip_env+=(PIP_CACHE_DIR=/tmp/pip-cache)
    fi
    if [[ -n $wheels ]]; then
        mkdir -p "$R/tmp/wheels"
        mount --bind -o ro "$wheels" "$R/tmp/wheels"
        pip_env+=(PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels)
    fi
else
    [[ -n $pip_cache ]] && pip_env+=("PIP_CACHE_DIR=$pip_cache")
    [[ -n $wheels ]] && pip_env+=(PIP_NO_INDEX=1 "PIP_FIND_LINKS=$(cd "$wheels" && pwd)")
fi

in_root() {  # a command run on the target system
    if live; then
        env "${pip_env[@]}" "$@"
    else
        local pass=() name
        for name in "${PASS_ENV[@]}"; do
            [[ -n ${!name:-} ]] && pass+=("$name=${!name}")
        done
        chroot "$R" /usr/bin/env -i "PATH=$PATH_IN_ROOT" HOME=/root LANG=C.UTF-8 \
            PIP_DISABLE_PIP_VERSION_CHECK=1 "${pass[@]}" "${pip_env[@]}" "$@"
    fi
}

same() { [[ -f $1 && -f $2 ]] && cmp -s "$1" "$2"; }

put() {  # put MODE SOURCE TARGET: install a file only when its content or mode differs
    local mode=$1 from=$2 to=$R$3
    if same "$from" "$to" && [[ $(stat -c %a "$to") == "${mode#0}" ]]; then
        return 1
    fi
    install -D -m "$mode" "$from" "$to"
}

switch_link() {  # switch_link TARGET LINK: an atomic symlink switch (rename over the old one)
    local target=$1 link=$R$2
    [[ -L $link && $(readlink "$link") == "$target" ]] && return 1
    mkdir -p "$(dirname "$link")"
    ln -sfn "$target" "$link.tmp.$$"
    mv -Tf "$link.tmp.$$" "$link"
    sync "$(dirname "$link")"  # the rename reaches the disk before anything counts on it
}

pi_os() { [[ -f $R/etc/rpi-issue ]] || grep -qs raspberrypi "$R"/etc/apt/sources.list.d/*.{list,sources}; }

# --- uninstall ------------------------------------------------------------------------------

uninstall() {
    local running_systemd=no
    live && [[ -d /run/systemd/system ]] && running_systemd=yes
    if [[ $running_systemd == yes ]]; then
        if systemctl is-active --quiet edge.service; then
            systemctl stop edge.service || die "could not stop edge.service: see \`journalctl -u edge\`"
        fi
        systemctl disable --quiet edge.service edge-update.path 2>/dev/null || true  # (not there: nothing to disable)
    fi
    rm -f "$R$WANTS" "$R$UNIT" "$R$UPDATE_WANTS" "$R$UPDATE_PATH" "$R$UPDATE_SERVICE" "$R$RULES" "$R$LINK"
    rmdir --ignore-fail-on-non-empty "$R$(dirname "$UPDATE_WANTS")" 2>/dev/null || true  # made by the install
    rm -rf "$R$PREFIX"
    if [[ $running_systemd == yes ]]; then
        systemctl daemon-reload
        if [[ -S /run/udev/control ]]; then
            udevadm control --reload || warn "udevadm could not reload the rules; they go at the next boot"
        fi
    fi
    say "removed $PREFIX, the unit, the udev rules and $LINK"
    if [[ $purge == yes ]]; then
        local created=() kind name removed=()
        [[ -f $R$CREATED ]] && mapfile -t created <"$R$CREATED"
        # The accounts before the directories: if one cannot go, the record stays for the next
        # run. Users first: a group cannot go while it is someone's primary group.
        for kind in user group; do
            for name in "${created[@]}"; do
                [[ $name == "$kind "* ]] || continue
                name=${name#* }
                if [[ $kind == user ]] && in_root getent passwd "$name" >/dev/null; then
                    in_root userdel "$name" ||
                        die "userdel could not remove the user $name (output above); fix that and run --uninstall --purge again"
                elif [[ $kind == group ]] && in_root getent group "$name" >/dev/null; then
                    in_root groupdel "$name" ||
                        die "groupdel could not remove the group $name (output above; is it another user's primary group?); fix that and run --uninstall --purge again"
                else
                    continue
                fi
                removed+=("$kind $name")
            done
        done
        rm -rf "$R$CONFIG_DIR" "$R$STATE_DIR" "$R/etc/systemd/system/edge.service.d"  # (your drop-ins)
        local IFS=,
        say "purged $CONFIG_DIR, $STATE_DIR, edge.service.d${removed[*]:+ and what the installer created: ${removed[*]}}"
    else
        say "kept $CONFIG_DIR, $STATE_DIR and the user $USER_NAME (--purge removes them)"
    fi
}

if [[ $action == uninstall ]]; then
    uninstall
    exit 0
fi

# --- packages -----------------------------------------------------------------------------

missing_packages() {
    local package
    for package in "$@"; do
        # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
        [[ $(in_root dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null) == installed ]] ||
            printf '%s\n' "$package"
    done
}

ensure_packages() {  # ensure_packages WHY PACKAGE...
    local why=$1 need
    shift
    mapfile -t need < <(missing_packages "$@")
    ((${#need[@]})) || return 0
    [[ $apt == yes ]] ||
        die "$why needs the Debian packages ${need[*]}: install them (apt-get install ${need[*]}) or run without --no-apt"
    say "installing ${need[*]} ($why)"
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" ||
        die "apt-get could not install ${need[*]}; run \`apt-get update\` on the target and try again"
}

available() {  # does the target's package sources offer PACKAGE?
    # (no package cache files written: a check leaves the target as it was)
    [[ $(in_root apt-cache -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= policy "$1" 2>/dev/null |
        awk '/Candidate:/ {print $2}') =~ ^[0-9] ]]
}

ensure_packages "the runtime" "${BASE_PACKAGES[@]}"

# --- user, groups, directories -----------------------------------------------------------

created() {  # created "KIND NAME": say so, and note it for --purge
    install -d -m 0755 "$R$CONFIG_DIR"
    grep -qsxF "$1" "$R$CREATED" || printf '%s\n' "$1" >>"$R$CREATED"
    say "created $1"
}

for group in "${DEVICE_GROUPS[@]}"; do
    # Raspberry Pi OS has all four; Debian lacks gpio, and the unit fails to start (217/GROUP)
    # when a SupplementaryGroups= group is missing.
    if ! in_root getent group "$group" >/dev/null; then
        in_root groupadd --system "$group" || die "groupadd could not create the group $group"
        created "group $group"
    fi
done
if ! in_root getent passwd "$USER_NAME" >/dev/null; then
    in_root useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
        --comment "edge appliance runtime" "$USER_NAME" || die "useradd could not create the user $USER_NAME"
    created "user $USER_NAME"
fi
groups_now=$(in_root id -nG "$USER_NAME")
for group in "${DEVICE_GROUPS[@]}"; do
    [[ " $groups_now " == *" $group "* ]] || in_root usermod -aG "$group" "$USER_NAME"
done
install -d -m 0755 "$R$PREFIX" "$R$PREFIX/releases" "$R$CONFIG_DIR"
install -d -m 0700 "$R$STATE_DIR"
in_root chown "$USER_NAME:$USER_NAME" "$STATE_DIR"

# --- the release ----------------------------------------------------------------------------

if [[ -z $source ]]; then
    [[ -f $here/../pyproject.toml ]] || die "no checkout around $here: pass --from WHEEL"
    source=$(cd "$here/.." && pwd)
fi
if [[ -f $source && $source == *.whl ]]; then
    # wheel file names: {name}-{version}-{python}-{abi}-{platform}.whl
    version=$(basename "$source" | cut -d- -f2)
elif [[ -f $source/pyproject.toml ]]; then
    version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$source/pyproject.toml" | head -n1)
else
    die "--from $source is neither a wheel (*.whl) nor a checkout with pyproject.toml"
fi
[[ $version =~ ^[0-9A-Za-z][0-9A-Za-z.+_-]*$ ]] || die "cannot tell the version of $source (found '$version')"
release=$PREFIX/releases/$version
# In the release until pip is done: `edge update` skips such a release, and a run after a
# failure or a kill starts it again (edge/releases.py's INCOMPLETE).
incomplete=$release/.edge-incomplete

if [[ -d $R$release && ! -e $R$incomplete ]]; then
    say "release $version is already installed in $release"
else
    [[ -e $R$release ]] && { say "removing the incomplete release $release"; rm -rf "$R$release"; }
    install -d -m 0755 "$R$release"
    echo "being installed" >"$R$incomplete"
    venv_args=()
    pi_os && venv_args+=(--system-site-packages)  # apt's picamera2 and libcamera bindings
    say "installing release $version into $release${venv_args:+ (with system site-packages)}"
    in_root python3 -m venv "${venv_args[@]}" "$release" ||
        die "python3 -m venv could not make $release (is python3-venv installed there?)"
    work=$(mktemp -d "$R/tmp/edge-install.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    if [[ -f $source ]]; then
        cp "$source" "$work/"
        package=/tmp/${work##*/}/$(basename "$source")
    else
        tar -C "$source" --exclude=./.venv --exclude=./.git --exclude=__pycache__ --exclude='*.egg-info' \
            --exclude=./build -cf - . | tar -C "$work" -xf -
        package=/tmp/${work##*/}
    fi
    in_root "$release/bin/pip" install --no-input "$package" ||
        die "pip could not install $source into $release (its output is above); nothing was switched"
    rm -rf "$work"
    rm "$R$incomplete"
fi
python=$release/bin/python

# --- the configuration --------------------------------------------------------------------

example=$here/edge.example.toml
config=$CONFIG_DIR/edge.toml
shipped=$PREFIX/edge.example.toml  # the example the last run shipped: was the config edited?
if [[ ! -e $R$config ]]; then
    install -m 0640 "$example" "$R$config"
    say "wrote $config from the example: edit it (node, MQTT broker), then \`edge config check\`"
elif ! same "$example" "$R$config" && ! same "$example" "$R$shipped"; then
    if same "$R$config" "$R$shipped"; then
        # never edited: take the new example, as dpkg does with an unchanged conffile
        install -m 0640 "$example" "$R$config.tmp"
        mv -f "$R$config.tmp" "$R$config"
        say "updated $config to the new example (it had not been edited)"
    elif ! same "$example" "$R$config.new"; then
        install -m 0640 "$example" "$R$config.new"
        say "kept your $config; the new example is beside it as $config.new: merge what you want"
    fi
fi
put 0644 "$example" "$shipped" || true
edge_gid=$(in_root getent group "$USER_NAME" | cut -d: -f3)
if [[ $(stat -c %g "$R$config") != "$edge_gid" || ! $(stat -c %A "$R$config") =~ ^-...r ]]; then
    # a config put there by hand or by an image builder: the service (group edge) must read it
    chgrp "$edge_gid" "$R$config"
    chmod g+r,o-rwx "$R$config"
    say "made $config readable by the group $USER_NAME"
fi

# What the service will see: edge.toml with edge.env's EDGE_* lines on top (systemd's
# EnvironmentFile= takes KEY=value lines).
service_env=()
if [[ -f $R$CONFIG_DIR/edge.env ]]; then
    mapfile -t service_env < <(sed -n 's/^[[:space:]]*\(EDGE_[A-Z0-9_]*=.*\)$/\1/p' "$R$CONFIG_DIR/edge.env")
fi
# The release's own config loader (what `edge config check` runs) validates it and says which
# features are on and which key files the config names, one `name=value` line each.
read -r -d '' query <<'PY' || true
import sys
from pathlib import Path
from edge.assembly import all_sections, load_config
from edge.config import ConfigError
env = dict(arg.split("=", 1) for arg in sys.argv[2:])
try:
    config, classes = load_config(Path(sys.argv[1]), False, env)
except ConfigError as exc:
    sys.exit("\n".join(f"  - {problem}" for problem in exc.problems))
def value(section, key, default=""):
    try:
        return config[section][key]
    except KeyError:
        return default
for warning in config.warnings:
    print(f"warning={warning}")
print(f"faces={value('faces', 'enabled', False) and value('doorbell', 'enabled', False)}")
print(f"picamera2={value('camera', 'backend') == 'picamera2' and value('doorbell', 'enabled', False)}")
print(f"gpio={value('doorbell', 'enabled', False)}")
print(f"sip={value('sip', 'enabled', False)}")
print(f"mqtt={value('mqtt', 'enabled', False)}")
print(f"key={value('audit', 'key_file')}")
for section in all_sections(classes):
    for key in section.keys:
        if key.secret_file and value(section.name, key.name):
            print(f"secret={value(section.name, key.name)}")
PY
facts_text=$(in_root "$python" -c "$query" "$config" "${service_env[@]}" 2>&1) ||
    die "$config is not valid for release $version:
$facts_text
fix it (or $CONFIG_DIR/edge.env), then run the installer again"
mapfile -t facts <<<"$facts_text"
fact() { printf '%s\n' "${facts[@]}" | sed -n "s/^$1=//p"; }
while read -r line; do warn "$line"; done < <(fact warning)

# --- what the enabled features need ---------------------------------------------------------

wanted=()
if [[ $(fact picamera2) == True ]]; then
    if pi_os || available python3-picamera2; then
        wanted+=(python3-picamera2)
    else
        warn "[camera] backend = \"picamera2\" needs python3-picamera2, which only Raspberry Pi OS offers;" \
            "on this system set [camera] backend = \"opencv\" (USB or RTSP camera)"
    fi
fi
[[ $(fact gpio) == True ]] && pi_os && wanted+=(python3-lgpio)  # gpiozero's pin library on a Pi 5
[[ $(fact sip) == True ]] && wanted+=(baresip-core)
[[ $(fact mqtt) == True ]] && wanted+=(mosquitto-clients)  # mosquitto_sub for looking at what it sends
ensure_packages "the configured features" "${wanted[@]}"

has_faces='import importlib.util as u, sys; sys.exit(not (u.find_spec("face_recognition") and u.find_spec("dlib")))'
if [[ $(fact faces) == True ]] && ! in_root "$python" -c "$has_faces"; then
    # dlib-bin ships dlib prebuilt but pip does not count it as face-recognition's `dlib`,
    # so face-recognition goes in with --no-deps (the same steps as README's).
    say "installing the face libraries into $release ([faces] enabled)"
    if ! in_root "$release/bin/pip" install --no-input dlib-bin face_recognition_models ||
        ! in_root "$release/bin/pip" install --no-input --quiet --no-deps face-recognition; then
        die "pip could not install the face libraries into $release (output above); or set [faces] enabled = false"
    fi
fi

# --- keys and secrets: 0600, readable by the service's user only --------------------------

owner=$(in_root id -u "$USER_NAME"):$(in_root id -g "$USER_NAME")  # the target's numbers, not this host's names
secure() {  # the service reads these; /etc stays read-only to it (ProtectSystem=strict)
    local file=$1
    [[ $(stat -c '%u:%g %a' "$R$file") == "$owner 600" ]] && return 0
    chown "$owner" "$R$file"
    chmod 0600 "$R$file"
    say "made $file readable by $USER_NAME only (0600)"
}
key=$(fact key)
if [[ -n $key && ! -e $R$key ]]; then
    # The audit key must exist before the first start: the service cannot write $CONFIG_DIR.
    install -d -m 0755 "$R$(dirname "$key")"
    (umask 077 && in_root "$python" -c 'import secrets; print(secrets.token_hex(32))' >"$R$key")
    say "created the audit key $key"
fi
[[ -n $key ]] && secure "$key"
while read -r secret; do
    if [[ -e $R$secret ]]; then
        secure "$secret"
    else
        warn "the config names $secret, which does not exist yet: create it with mode 0600, owner $USER_NAME"
    fi
done < <(fact secret)

# --- current link, unit, udev rules ---------------------------------------------------------

if [[ ! -e $R$PREFIX/current ]]; then
    # A first install (or a dangling link). Switching a running device to another release is
    # `edge update`'s job: it checks the new one's health and rolls back.
    switch_link "releases/$version" "$PREFIX/current"
    say "current release: $version"
elif [[ $(readlink "$R$PREFIX/current") != "releases/$version" ]]; then
    say "release $version installed beside the current $(readlink "$R$PREFIX/current");" \
        "switch with \`edge update $release\`"
fi
switch_link "$PREFIX/current/bin/edge" "$LINK" && say "linked $LINK"
unit_changed=no
put 0644 "$here/edge.service" "$UNIT" && { unit_changed=yes; say "installed $UNIT"; }
put 0644 "$here/edge-update.path" "$UPDATE_PATH" && { unit_changed=yes; say "installed $UPDATE_PATH"; }
put 0644 "$here/edge-update.service" "$UPDATE_SERVICE" && { unit_changed=yes; say "installed $UPDATE_SERVICE"; }
rules_changed=no
put 0644 "$here/99-edge.rules" "$RULES" && { rules_changed=yes; say "installed $RULES"; }

if live && [[ -d /run/systemd/system ]]; then
    [[ $unit_changed == yes ]] && systemctl daemon-reload
    if [[ $rules_changed == yes && -S /run/udev/control ]]; then  # (no udevd in a container)
        if udevadm control --reload; then
            udevadm trigger --subsystem-match=tty --subsystem-match=gpio --subsystem-match=video4linux \
                --subsystem-match=sound --subsystem-match=dma_heap || warn "udevadm trigger failed: replug the devices"
        fi
    fi
    systemctl enable --quiet edge.service edge-update.path
    systemctl start edge-update.path || warn "edge-update.path did not start: Home Assistant cannot install updates"
    started=start
    [[ $unit_changed == yes ]] && systemctl is-active --quiet edge.service && started=restart
    systemctl "$started" edge.service ||
        die "edge.service did not start: \`systemctl status edge\` and \`journalctl -u edge\` say why"
    say "running: systemctl status edge; edge status"
else
    # No running systemd there: what `systemctl enable` would do, by hand or with --root.
    if [[ ! -L $R$WANTS ]]; then
        if command -v systemctl >/dev/null; then
            systemctl --root="$root" --quiet enable edge.service
        else
            switch_link "$UNIT" "$WANTS"
        fi
        say "enabled edge.service"
    fi
    if [[ ! -L $R$UPDATE_WANTS ]]; then
        if command -v systemctl >/dev/null; then
            systemctl --root="$root" --quiet enable edge-update.path
        else
            switch_link "$UPDATE_PATH" "$UPDATE_WANTS"
        fi
        say "enabled edge-update.path"
    fi
    say "installed into $root; edge.service starts at its next boot"
fi
