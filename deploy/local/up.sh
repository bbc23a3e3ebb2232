#!/usr/bin/env bash
# The README's first command: set everything up, start a local 3-host cluster (each host its own
# network namespace) and run the example job on it. Ctrl-C tears it down. Extra args go to
# `ctl local up` (e.g. --once to tear down right after the job runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
exec .venv/bin/ctl local up --hosts 3 --submit examples/shop.yaml "$@"
