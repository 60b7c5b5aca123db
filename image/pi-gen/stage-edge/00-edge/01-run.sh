#!/bin/bash -e
# Installs the edge runtime into the image with image/install.sh --root: the same installer
# as on a running Pi, without a running systemd. pi-gen runs this from this directory, with
# ROOTFS_DIR set. EDGE_WHEEL=path/to/edge_appliance-*.whl installs a built wheel instead of
# this checkout; EDGE_PIP_CACHE=DIR keeps pip's downloads between image builds;
# EDGE_WHEELS=DIR installs from those (aarch64) wheels only, without the network.
checkout=$(cd ../../../.. && pwd)
args=(--root "${ROOTFS_DIR}")
if [ -n "${EDGE_WHEEL:-}" ]; then
	args+=(--from "${EDGE_WHEEL}")
fi
if [ -n "${EDGE_PIP_CACHE:-}" ]; then
	args+=(--pip-cache "${EDGE_PIP_CACHE}")
fi
if [ -n "${EDGE_WHEELS:-}" ]; then
	args+=(--wheels "${EDGE_WHEELS}")
fi
# A fleet-wide config, if you put one here, is installed before the example would be.
if [ -f files/edge.toml ] && [ ! -e "${ROOTFS_DIR}/etc/edge/edge.toml" ]; then
	install -D -m 0640 files/edge.toml "${ROOTFS_DIR}/etc/edge/edge.toml"
fi
"${checkout}/image/install.sh" "${args[@]}"
# cloud-init reads the device's user-data from the boot partition (see image/cloud-init/).
install -D -m 0644 files/99-edge-nocloud.cfg "${ROOTFS_DIR}/etc/cloud/cloud.cfg.d/99-edge-nocloud.cfg"
printf 'policy: enabled\n' >"${ROOTFS_DIR}/etc/cloud/ds-identify.cfg"
