#!/usr/bin/env bash
# The README's second command, and what CI runs: install what is missing, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
