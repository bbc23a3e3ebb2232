"""Every fault of issue 6 on real processes, in one run of the chaos script (bench/chaos.py) on a
local cluster of 3 hosts (runc containers, a network namespace each), 2 scheduler replicas and a
3-member etcd, under a stream of submissions: an agent killed past its lease, the leading
scheduler killed, a host's network cut, an etcd member killed — each recovered from, and at the
end no accepted job lost and no job slot running twice (counted from runc on every host)."""
import math
import os
import shutil

import pytest

from bench.chaos import run
from tests.conftest import opt_in, searchable_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow, opt_in("about 2 minutes of faults"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed")]


def test_one_round_of_every_fault_loses_nothing_and_runs_nothing_twice(request):
    # searchable: the containers run as their user namespace's root (tests/conftest.py)
    result = run(searchable_dir(request, "chaos"), rounds=1, prefix="py", net="10.213.232.0/24", etcd_port=23880,
                 scheduler_port=17880, every=2.0)
    print(result)
    assert set(result["faults"]) == {"agent-kill", "leader-kill", "net-cut", "etcd-kill"}
    assert all(math.isfinite(s) for s in result["worst_recovery_s"].values()), result
    assert result["jobs_accepted"] >= 8, result
    assert result["jobs_lost"] == 0, result["lost"]
    assert result["instances_running_twice"] == 0, result["twice"]
