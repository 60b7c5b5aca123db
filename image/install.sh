#!/usr/bin/env bash
# Installs the edge runtime on a Raspberry Pi OS (64-bit) or Debian box: a system user, a
# venv under /opt/edge (with system site-packages, for python3-picamera2 from apt), the
# systemd unit, udev rules and an example config. Run as root from a checkout:
#   sudo image/install.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${EDGE_PREFIX:-/opt/edge}

apt-get install -y python3-venv python3-dev mosquitto-clients
if grep -q "Raspberry Pi" /proc/device-tree/model 2>/dev/null; then
  apt-get install -y python3-picamera2 python3-lgpio
fi
id edge >/dev/null 2>&1 || useradd --system --home /var/lib/edge --shell /usr/sbin/nologin edge
for group in gpio video dialout; do getent group "$group" >/dev/null && usermod -aG "$group" edge; done

python3 -m venv --system-site-packages "$prefix"
"$prefix/bin/pip" install --upgrade pip
"$prefix/bin/pip" install "$here"
# dlib-bin satisfies face-recognition's `dlib` requirement in practice but not for pip.
"$prefix/bin/pip" install dlib-bin face_recognition_models
"$prefix/bin/pip" install --no-deps face-recognition

install -d -m 0755 /etc/edge
[ -f /etc/edge/edge.toml ] || install -m 0640 -g edge "$here/image/edge.example.toml" /etc/edge/edge.toml
sed "s|@EDGE_BIN@|$prefix/bin/edge|" "$here/image/edge.service" > /etc/systemd/system/edge.service
install -m 0644 "$here/image/99-edge.rules" /etc/udev/rules.d/99-edge.rules
systemctl daemon-reload
"$prefix/bin/edge" config check --config /etc/edge/edge.toml
systemctl enable --now edge.service
echo "edge installed: systemctl status edge; $prefix/bin/edge status"
