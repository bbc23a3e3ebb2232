"""The agent's own cost while idle with 20 instances (issue 5): resident memory and cpu share,
measured from /proc over a quiet period, with its usage sampling and metrics on.
Target (issue 17): RSS <= 75 MiB with both drivers up, <= 1% of a core.

    sudo .venv/bin/python bench/agent_overhead.py [--instances 20] [--seconds 30] [--drivers container,vm]
                                                  [--tree OTHER_CHECKOUT]

`--tree` runs the cluster from another checkout (side by side with this one, e.g. main: `git archive
main | tar -x -C /tmp/main`); run it from a directory that is not a checkout (`python -m` puts the
working directory first on sys.path).

With `--drivers container,vm` libvirtd must be running (as `ctl local up` needs it); the result's
`drivers_up` says which drivers really came up: a vm driver whose probe failed holds no libvirt
connection and would flatter the figure. The work directory is made traversable (0711) because
QEMU runs as libvirt's user and must read the probe guest under it.

Figures (2 cores, 20 idle busybox containers, usage every 5 s, --seconds 20, 2026-11-27; "before"
is b7a0b19 without 5ec1e2c, "after" adds 5ec1e2c and agent/memory.py + lazy yaml/tomllib):

    drivers        agent RSS before -> after              cpu, % of a core   threads
    container,vm   81.7 82.0 81.8 -> 58.0 57.9 57.9 MiB   0.3 -> 0.3-0.35    16
                   (medians 81.8 -> 57.9, runs alternating, drivers_up "container,vm", vm on TCG)
    container      68.4 -> 44.4 MiB (one run each)        0.25 -> 0.3        15
    container,vm   with orjson for the etcd records (issue 7): 58.2 58.2 58.1 MiB
    container,vm   --tls (gRPC and etcd), certificates checked in a child process: 60.2 60.2 60.3 MiB
    container,vm   issue 12 (handle store, shared driver modules, GPU devices), side by side with
                   e830d0b, alternating: 58.1 58.2 -> 58.3 58.4 MiB; container alone 44.4 44.5 -> 44.7 44.6

Where the memory went (container,vm, before): pyroute2's import ~9.5 MiB (its __init__ loads NDB,
IPDB, sqlite3, unittest.mock...; replaced by agent/rtnl.py), cryptography ~9 MiB (packyard.tls now
imports it only with --tls), prometheus_client with http.server/urllib/email ~3 MiB (replaced by
agent/metrics.py), yaml + tomllib ~1.3 MiB (packyard.config imports them only with --config),
free heap holes ~0.5 MiB (agent/memory.py). What is left (RSS logged at each start-up step):
the interpreter 10.6 MiB, imports up to main() 39.6 (asyncio + ssl 9.4, grpc 10.3, aetcd +
protobuf 3.6, click 1.0), etcd connected +4.3 (gRPC's channel), drivers made +13.7 (libvirt-python
and its ~170 shared libraries ~11), fingerprint (libvirt connection, probe) +1.1, 20 containers
+1.1. With --tls the certificates are checked in a child process (tls.load_isolated), so
cryptography stays out of the agent; the TLS connections add ~2 MiB.
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
    ap.add_argument("--tls", action="store_true", help="mutual TLS everywhere, etcd included (as deployed)")
    ap.add_argument("--tree", default=None,
                    help="another checkout to measure (e.g. `git worktree add /tmp/main main`), side by side")
    args = ap.parse_args()
    if args.tree:       # the cluster's processes import packyard from that checkout first
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [args.tree, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="packyard-bench-") as d:
        os.chmod(d, 0o711)      # QEMU (libvirt's user) reads the vm driver's probe guest in here
        c = LocalCluster(Path(d), hosts=1, prefix="pa", net="10.213.128.0/24", etcd_port=23770,
                         scheduler_port=17770, capacity="cpu=8,memory=8Gi", log_level="warning",
                         usage_interval=args.usage_interval, drivers=args.drivers, tls=args.tls)
        c.up()
        try:
            job = Path(d) / "job.yaml"
            job.write_text(f"name: idle\ngroups:\n  - name: c\n    count: {args.instances}\n"
                           "    resources: {cpu: 100m, memory: 32Mi}\n"
                           "    container: {command: [/bin/sleep, '3600']}\n")
            r = c.ctl("submit", str(job), "--wait", "--timeout", "120")
            assert r.returncode == 0, r.stderr
            pid = c.hosts[0].proc.pid
            nodes = json.loads(c.ctl("nodes", "-o", "json").stdout or "[]")
            attrs = nodes[0].get("attributes", {}) if nodes else {}
            up = sorted(k.split(".", 1)[1] for k, v in attrs.items() if k.startswith("driver.") and v == "ok")
            time.sleep(5)   # settle
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            share = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            result = {"tree": args.tree or "this", "instances": args.instances, "seconds": args.seconds, "drivers": args.drivers,
                      "drivers_up": ",".join(up), "agent_threads": len(os.listdir(f"/proc/{pid}/task")),
                      "usage_interval_s": args.usage_interval,
                      "agent_rss_mib": round(rss_bytes(pid) / (1 << 20), 1),
                      "agent_cpu_percent_of_a_core": round(share * 100, 2)}
        finally:
            c.down()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
