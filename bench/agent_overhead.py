"""The agent's own cost while idle with 20 instances (issue 5): resident memory and cpu share,
measured from /proc over a quiet period, with its usage sampling and metrics on.
Target: RSS <= 60 MiB, <= 1% of a core.

    sudo .venv/bin/python bench/agent_overhead.py [--instances 20] [--seconds 30]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ctl.local import LocalCluster

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--usage-interval", type=float, default=5.0)
    ap.add_argument("--drivers", default="container", help="e.g. container,vm (loads libvirt too)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="packyard-bench-") as d:
        c = LocalCluster(Path(d), hosts=1, prefix="pa", net="10.213.128.0/24", etcd_port=23770,
                         scheduler_port=17770, capacity="cpu=8,memory=8Gi", log_level="warning",
                         usage_interval=args.usage_interval, drivers=args.drivers)
        c.up()
        try:
            job = Path(d) / "job.yaml"
            job.write_text(f"name: idle\ngroups:\n  - name: c\n    count: {args.instances}\n"
                           "    resources: {cpu: 100m, memory: 32Mi}\n"
                           "    container: {command: [/bin/sleep, '3600']}\n")
            r = c.ctl("submit", str(job), "--wait", "--timeout", "120")
            assert r.returncode == 0, r.stderr
            pid = c.hosts[0].proc.pid
            time.sleep(5)   # settle
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            share = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            result = {"instances": args.instances, "seconds": args.seconds, "drivers": args.drivers,
                      "usage_interval_s": args.usage_interval,
                      "agent_rss_mib": round(rss_bytes(pid) / (1 << 20), 1),
                      "agent_cpu_percent_of_a_core": round(share * 100, 2)}
        finally:
            c.down()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
