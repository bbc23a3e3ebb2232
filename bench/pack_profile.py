"""Hosts used by each policy under another VM overhead profile than the default (bench/PACKING.md:
the seed 2 tie of the VM + container mix came from the previous profile).

    python bench/pack_profile.py --nodes N.csv --workloads W.csv \
        --vm-fixed-mib 80 --vm-per-vcpu-mib 4 --vm-memory-fraction 0.01

Same engine and inputs as `packyard-bench pack`, in-process; prints one line per policy.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from packyard.profiles import DEFAULTS, MIB, Profile
from scheduler.placement.benchcli import lower_bound, read_nodes, read_workloads
from scheduler.placement.config import POLICIES, EngineConfig
from scheduler.placement.engine import place
from scheduler.placement.plan import Plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=Path, required=True)
    p.add_argument("--workloads", type=Path, required=True)
    p.add_argument("--vm-fixed-mib", type=int, default=80)
    p.add_argument("--vm-per-vcpu-mib", type=int, default=4)
    p.add_argument("--vm-memory-fraction", type=float, default=0.01)
    p.add_argument("--policies", default="packyard,nomad-binpack,k8s-mostallocated")
    a = p.parse_args()
    base = DEFAULTS["vm"]
    profiles = {**DEFAULTS, "vm": Profile("vm", fixed_memory=a.vm_fixed_mib * MIB,
                                          per_vcpu_memory=a.vm_per_vcpu_mib * MIB,
                                          memory_fraction=a.vm_memory_fraction,
                                          fixed_cpu_milli=base.fixed_cpu_milli)}
    table = read_nodes(a.nodes)
    asks = read_workloads(a.workloads)
    for policy in a.policies.split(","):
        plan = Plan(table, EngineConfig(profiles=profiles, scorers=POLICIES[policy]))
        results = place(table, asks, plan=plan)
        reserved = np.array([[r.reserved.cpu_milli, r.reserved.memory_bytes, r.reserved.disk_bytes,
                              r.reserved.gpu_milli] for r in results], dtype=np.int64).reshape(-1, 4)
        used = int(np.any(plan.allocated != table.allocated, axis=1).sum())
        unplaced = sum(r.unplaced for r in results)
        print(f"{policy}: hosts used {used}, lower bound {lower_bound(table, reserved)}, unplaced {unplaced}")


if __name__ == "__main__":
    main()
