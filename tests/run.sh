#!/usr/bin/env bash
# The README's second command, and what CI runs: install what is missing, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/setup.sh
.venv/bin/ruff check .
# pytest-timeout bounds each test; this bounds the whole run (a hang at exit included)
exec timeout --kill-after=30 2400 .venv/bin/pytest -q -p no:cacheprovider "$@"
