#!/bin/sh
# Every packing benchmark of issue 3, every policy, one run: prints the markdown tables of
# bench/PACKING.md. Usage: bench/pack_all.sh [WORKDIR]   (generated CSVs and JSON summaries go there)
set -e
cd "$(dirname "$0")/.."
PY=.venv/bin/python
T=${TRACE:-../shared/traces/alibaba-gpu-v2023}
B=${1:-$(mktemp -d)}
mkdir -p "$B"
echo "## Alibaba GPU trace: 1,523 hosts, 8,152 workloads (file order, then 4 shuffles)"
$PY bench/pack_compare.py --nodes $T/openb_node_list_all_node.csv \
    --workloads $T/openb_pod_list_default.csv --orders 0,1,2,3,4 --json "$B/alibaba.json"
echo "## Alibaba GPU trace with GPUs pooled per host (the issue's peer figures' model)"
$PY bench/pack_compare.py --nodes $T/openb_node_list_all_node.csv --gpu-model pooled \
    --workloads $T/openb_pod_list_default.csv --orders 0,1,2,3,4 --json "$B/alibaba-pooled.json"
for s in 1 2 3 4 5 6; do
  $PY bench/gen_mix.py --hosts 600 --workloads 7000 --seed $s --nodes "$B/mix$s.n.csv" --out "$B/mix$s.w.csv"
  echo "## VM + container mix, seed $s: 600 identical hosts, 7,000 workloads (file order, 2 shuffles for seeds 1-3)"
  orders=0; [ $s -le 3 ] && orders=0,1,2
  $PY bench/pack_compare.py --nodes "$B/mix$s.n.csv" --workloads "$B/mix$s.w.csv" --orders $orders \
      --json "$B/mix$s.json"
done
for s in 1 2; do
  $PY bench/gen_mix.py --hosts 3000 --workloads 40000 --seed $s --nodes "$B/mixbig$s.n.csv" --out "$B/mixbig$s.w.csv"
  echo "## VM + container mix, seed $s: 3,000 hosts, 40,000 workloads"
  $PY bench/pack_compare.py --nodes "$B/mixbig$s.n.csv" --workloads "$B/mixbig$s.w.csv" --json "$B/mixbig$s.json"
done
$PY bench/gen_mix.py --hosts 10000 --workloads 100000 --seed 7 --nodes "$B/scale.n.csv" --out "$B/scale.w.csv"
echo "## Throughput: 10,000 hosts, 100,000 workloads"
$PY bench/pack_compare.py --nodes "$B/scale.n.csv" --workloads "$B/scale.w.csv" --json "$B/scale.json"
$PY bench/gen_mix.py --hosts 10000 --workloads 100000 --seed 7 --gpu-hosts 0.25 \
    --nodes "$B/gscale.n.csv" --out "$B/gscale.w.csv"
echo "## Throughput with GPUs: 10,000 hosts (a quarter with 8 GPUs), 100,000 workloads"
$PY bench/pack_compare.py --nodes "$B/gscale.n.csv" --workloads "$B/gscale.w.csv" --json "$B/gscale.json"
