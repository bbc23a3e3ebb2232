#!/usr/bin/env bash
# The README's first command: set everything up, start a local 3-host cluster (each host its own
# network namespace, running containers and VMs) with Prometheus, and run the mixed VM + container
# example on it. Ctrl-C tears it down. Extra args go to `ctl local up` (e.g. --once).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
bash deploy/guest/build.sh /var/lib/packyard/guest >/dev/null
# libvirt's daemons, if the machine does not run them already (no systemd needed)
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
exec .venv/bin/ctl local up --hosts 3 --registry --submit examples/mixed.yaml "$@"
