#!/usr/bin/env bash
# Installs what packyard needs on a Debian 12 machine (as root): Debian packages, then a venv in
# .venv with packyard and its test tools. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGES=(etcd-server etcd-client runc s6 busybox-static iproute2 kmod
          libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc g++ python3-venv python3-dev
          qemu-system-x86 qemu-utils linux-image-amd64 binutils cpio prometheus
          debootstrap systemd-container openssh-client
          golang-github-containers-common docker-registry skopeo umoci)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# the containers' user namespace: the agent maps container ids 0..65535 to the range of
# --userns-remap (default packyard) in /etc/subuid and /etc/subgid; one is added after the last
# range there, as useradd allocates them
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q '^packyard:[0-9]*:[0-9]*$' "$f"; then
    start=$(awk -F: 'BEGIN { e = 100000 } NF == 3 && $2 + $3 > e { e = $2 + $3 } END { print e }' "$f")
    echo "packyard:$start:65536" >> "$f"
  fi
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The stamp holds the sha256 of the pyproject.toml it was installed from: a changed dependency list
# reinstalls even when a checkout or merge left the file older than the stamp.
stamp=.venv/.packyard-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
# The placement kernel compiled ahead of time (scheduler/placement/aot.py; the scheduler then runs
# without numba) is built by the install for this machine's CPU, and again whenever kernel.py
# changed since (a checkout, a merge): the scheduler would otherwise compile it with numba.
export PACKYARD_KERNEL_CPU=host
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
.venv/bin/python -m scheduler.placement.aot --if-stale --cpu host >/dev/null ||
  echo "setup.sh: the placement kernel could not be built ahead of time; the scheduler compiles it with numba" >&2
