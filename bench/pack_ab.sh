#!/bin/sh
# Side-by-side throughput of two versions of the engine on one instance, alternating runs so that
# both see the same machine load, and whether they decide the same (OUT.csv byte for byte).
# Usage: bench/pack_ab.sh REV NODES.csv WORKLOADS.csv [RUNS]
#   REV: a git revision to compare the work tree against (its tree is exported to a temp dir)
# Prints per run: version, placements/s (whole process), engine placements/s, unplaced, hosts
# used, CPU seconds of the process.
set -e
cd "$(dirname "$0")/.."
HERE=$(pwd)
PY=$HERE/.venv/bin/python
REV=$1; NODES=$(realpath "$2"); WORK=$(realpath "$3"); RUNS=${4:-3}
T=$(mktemp -d)
# the revision's tree apart from run.py: a script's own directory comes first on sys.path, so a
# tree beside run.py would be imported for both sides (before 2026-12-06 it was: both ran REV)
mkdir "$T/tree"
git archive "$REV" | tar -x -C "$T/tree"
cat > "$T/run.py" <<'PYEOF'
import atexit, resource, sys
from scheduler.placement.benchcli import main
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    sys.stderr.write(f"{r.ru_utime + r.ru_stime:.2f}\n")
atexit.register(cpu)
sys.argv = ["packyard-bench", *sys.argv[1:]]
main()
PYEOF
for i in $(seq "$RUNS"); do
  for side in "$REV" worktree; do
    root=$T/tree; [ "$side" = worktree ] && root=$HERE
    out="$T/out.$(echo "$side" | tr -c 'a-zA-Z0-9\n' _).csv"
    cpu=$(cd "$root" && PYTHONPATH=$root $PY "$T/run.py" pack --nodes "$NODES" --workloads "$WORK" \
          --out "$out" 2>&1 >"$T/summary" | tail -1)
    tail -1 "$T/summary" | $PY -c "import json, sys; d = json.load(sys.stdin); print('$side', d['placements_per_s'], d['engine_placements_per_s'], d['unplaced'], d['hosts_used'], 'cpu', '$cpu')"
    # which tree ran, once (the check that both sides are not the same code)
    [ "$i" = 1 ] && (cd "$root" && PYTHONPATH=$root $PY -c "import sys; sys.path.pop(0); import scheduler.placement.engine as e; print('  ran', e.__file__)")
  done
  if cmp -s "$T"/out.*.csv; then echo "run $i: same decisions"; else echo "run $i: decisions differ"; fi
done
rm -rf "$T"
