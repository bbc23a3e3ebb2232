"""Total instance caps: the arithmetic on specs (pure), and one submit refused against a real etcd
with what was accepted before left as it was."""
import grpc
import pytest

from packyard import keys
from packyard.spec import validate
from scheduler.caps import Caps, OverCap, check, instances
from scheduler.controller import ControllerConfig
from tests.scheduler.inprocess import start_scheduler


def spec(name="shop", counts=(3,), type="service"):
    return validate({"name": name, "type": type, "groups": [
        {"name": f"g{i}", **({} if type == "system" else {"count": c}),
         "resources": {"cpu": "10m", "memory": "8Mi"}} for i, c in enumerate(counts)]})


def test_a_job_counts_every_group_and_a_system_job_one_per_node():
    assert instances(spec(counts=(3, 4)), nodes=7) == 7
    assert instances(spec(counts=(1, 1), type="system"), nodes=5) == 10


def test_the_job_cap_is_on_the_groups_summed():
    check(spec(counts=(5, 5)), [], 1, Caps(per_job=10, per_cluster=100))
    with pytest.raises(OverCap, match=r"groups\[\]\.count: the job asks for 11 instances, .*--max-job-instances 10"):
        check(spec(counts=(5, 6)), [], 1, Caps(per_job=10, per_cluster=100))


def test_the_cluster_cap_counts_the_other_jobs():
    others = [spec("a", (40,)), spec("b", (50,))]
    check(spec(counts=(10,)), others, 1, Caps(per_job=100, per_cluster=100))
    with pytest.raises(OverCap, match=r"cluster would run 101 instances.*--max-cluster-instances 100"):
        check(spec(counts=(11,)), others, 1, Caps(per_job=100, per_cluster=100))


async def written(etcd):
    """The jobs, their versions and their instances' ids (placement notes the instances change)."""
    out = []
    for prefix in (keys.JOBS, keys.VERSIONS, keys.DEPLOYMENTS, keys.INSTANCES):
        out += [(kv.key, kv.value if prefix != keys.INSTANCES else b"") for kv in (await etcd.get_prefix(prefix))[1]]
    return out


async def test_a_submit_over_a_cap_is_refused_and_leaves_etcd_as_it_was(etcd):
    sched = await start_scheduler(etcd, ControllerConfig(caps=Caps(per_job=5, per_cluster=8)))
    try:
        await sched.submit(spec("kept", (3, 2)))
        before = await written(etcd)
        with pytest.raises(grpc.aio.AioRpcError) as job_cap:
            await sched.submit(spec("big", (6,)))
        with pytest.raises(grpc.aio.AioRpcError) as cluster_cap:
            await sched.submit(spec("more", (4,)))
        for refused in (job_cap.value, cluster_cap.value):
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.details().startswith("groups[].count:")
        assert "--max-job-instances 5" in job_cap.value.details()
        assert "--max-cluster-instances 8" in cluster_cap.value.details()
        assert await written(etcd) == before
        assert (await sched.submit(spec("more", (3,)))).changed
    finally:
        await sched.close()
