"""Mutual TLS on every gRPC port of a real cluster (scheduler with embedded etcd, one agent in its own
network namespace), certificates made by `ctl certs init`: accepted with the cluster's certificates;
refused in plaintext; refused with a certificate of another CA; on the agent's port too."""
import json
import os
import subprocess
import sys

import grpc
import pytest

from ctl.local import LocalCluster
from packyard import tls
from packyard.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from tests.conftest import opt_in, searchable_dir

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

JOB = ("name: secret\ngroups:\n  - name: main\n    count: 1\n    resources: {cpu: 100m, memory: 32Mi}\n"
       "    container: {command: [/bin/sleep, '3600']}\n")


@pytest.fixture(scope="module")
def cluster(request):
    c = LocalCluster(searchable_dir(request, "tls-cluster"), hosts=1, prefix="pt", net="10.213.176.0/24",
                     etcd_port=23810, scheduler_port=17810, drivers="fake", tls=True, lease_ttl=30)
    c.up()
    yield c
    c.down()


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Another cluster's certificates: the same role names under another CA."""
    d = tmp_path_factory.mktemp("foreign-ca")
    tls.init(d, force=True)
    return d


@pytest.fixture(scope="module")
def running(cluster, tmp_path_factory):
    """The job, submitted by ctl with the cluster's certificates, running on the one agent."""
    job = tmp_path_factory.mktemp("job") / "secret.yaml"
    job.write_text(JOB)
    submitted = cluster.ctl("submit", str(job), "--wait", "--timeout", "60", "-o", "json", check=True)
    return json.loads(submitted.stdout)["instances"]


def plain_ctl(cluster, *args):
    """ctl as someone without the certificates would run it: no --tls, no PACKYARD_TLS."""
    env = {k: v for k, v in os.environ.items() if k != "PACKYARD_TLS"}
    return subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", cluster.scheduler_address, *args],
                          capture_output=True, text=True, timeout=60, env=env)


def impostor(cluster, foreign, role) -> tls.Identity:
    """Trusts our CA (so it would accept our server) but presents another CA's certificate of ROLE:
    only the server's check of client certificates stands in its way."""
    theirs = tls.load(foreign, role)
    ours = (cluster.tls_dir / "ca.crt").read_bytes()
    return tls.Identity(role=role, ca=ours, cert=theirs.cert, key=theirs.key)


def call(address, identity, server_role, rpc, node="pt-host1"):
    with tls.dial(address, identity, server_role, node=node) as channel:
        if server_role == "agent":
            return getattr(agent_pb2_grpc.AgentStub(channel), rpc)(agent_pb2.InventoryRequest(), timeout=10)
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        return getattr(stub, rpc)(scheduler_pb2.ListRequest(), timeout=10)


def refused(address, identity, server_role, rpc, node="pt-host1") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(address, identity, server_role, rpc, node)
    return e.value


# --- the scheduler's port ---------------------------------------------------------------------------
def test_ctl_with_the_clusters_certificates_submits_and_the_job_runs(running):
    assert [i["state"] for i in running] == ["running"]
    assert running[0]["node"] == "pt-host1"


def test_ctl_in_plaintext_is_refused_with_a_clear_error(cluster, running):
    r = plain_ctl(cluster, "list")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot reach the scheduler") and "Traceback" not in r.stderr
    assert "secret" not in r.stdout


def test_ctl_with_another_clusters_certificates_is_refused(cluster, foreign, running):
    r = plain_ctl(cluster, "--tls", str(foreign), "list")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot reach the scheduler") and "Traceback" not in r.stderr


def test_the_scheduler_refuses_a_client_certificate_of_another_ca(cluster, foreign):
    assert refused(cluster.scheduler_address, impostor(cluster, foreign, "ctl"), "scheduler", "List").code() \
        == grpc.StatusCode.UNAVAILABLE
    # the same client with our own certificate is served: the certificate alone made the difference
    ours = tls.load(cluster.tls_dir, "ctl")
    assert isinstance(call(cluster.scheduler_address, ours, "scheduler", "List"), scheduler_pb2.ListResponse)


# --- the agent's port ------------------------------------------------------------------------------
def test_the_agent_answers_the_schedulers_certificate(cluster, running):
    reply = call(cluster.hosts[0].endpoint, tls.load(cluster.tls_dir, "scheduler"), "agent", "Inventory")
    assert reply.node == "pt-host1"
    assert [e.id for e in reply.instances] == [running[0]["id"]]


def test_the_agent_is_reached_only_as_the_node_its_certificate_names(cluster, running):
    """pt-host1's agent, dialled as another node (as if pt-host1 had registered pt-host2's name):
    the scheduler's handshake refuses its certificate."""
    error = refused(cluster.hosts[0].endpoint, tls.load(cluster.tls_dir, "scheduler"), "agent", "Inventory",
                    node="pt-host2")
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_the_agent_refuses_plaintext(cluster):
    error = refused(cluster.hosts[0].endpoint, None, "agent", "Inventory")
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_the_agent_refuses_a_certificate_of_another_ca(cluster, foreign):
    error = refused(cluster.hosts[0].endpoint, impostor(cluster, foreign, "scheduler"), "agent", "Inventory")
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_the_agent_refuses_ctls_certificate(cluster):
    """ctl's certificate is the cluster's, but only the scheduler may talk to agents."""
    error = refused(cluster.hosts[0].endpoint, tls.load(cluster.tls_dir, "ctl"), "agent", "Inventory")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not accept calls from packyard-ctl" in error.details()


# --- etcd's port -----------------------------------------------------------------------------------
async def _list_jobs(endpoint: str, identity: tls.Identity | None) -> list[str]:
    from packyard import keys
    from packyard.etcd import Etcd
    etcd = Etcd(endpoint, identity=identity, retry_for=1.0)
    try:
        await etcd.connect()
        _, kvs = await etcd.get_prefix(keys.JOBS)
        return [keys.last(kv.key) for kv in kvs]
    finally:
        await etcd.close()


@opt_in("a slow proof")
async def test_etcd_serves_the_clusters_certificates_only(cluster, foreign, running):
    """The job reached etcd over TLS (the scheduler's client); with the scheduler's certificate we
    read it too. In plaintext, or with another CA's certificate, etcd answers nothing."""
    endpoint = cluster.etcd_endpoint
    assert endpoint.startswith("https://")
    assert "secret" in await _list_jobs(endpoint, tls.load(cluster.tls_dir, "scheduler"))
    for who in (None, impostor(cluster, foreign, "scheduler")):
        plain = endpoint.replace("https://", "http://") if who is None else endpoint
        with pytest.raises(Exception) as e:
            await _list_jobs(plain, who)
        assert "secret" not in str(e.value)


def test_an_https_etcd_without_certificates_is_a_clear_error():
    from packyard.etcd import Etcd
    with pytest.raises(ValueError, match="wants TLS: start with --tls DIR"):
        Etcd("https://127.0.0.1:2379")
    with pytest.raises(ValueError, match="mix http and https"):
        Etcd("https://127.0.0.1:2379,http://127.0.0.1:2380")


# --- etcd's users: each identity its own keys (issue 15) --------------------------------------------
def etcdctl(cluster, stem, *args):
    d = cluster.tls_dir
    return subprocess.run(["etcdctl", "--endpoints", cluster.etcd_endpoint, "--cacert", str(d / "ca.crt"),
                           "--cert", str(d / f"{stem}.crt"), "--key", str(d / f"{stem}.key"),
                           "--insecure-skip-tls-verify", *args],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})


def test_an_agents_certificate_writes_its_own_nodes_keys_only(cluster, running):
    own = etcdctl(cluster, "agent-pt-host1", "get", "/packyard/state/pt-host1/", "--prefix", "--keys-only")
    assert own.returncode == 0 and running[0]["id"] in own.stdout, own.stderr
    for key in ("/packyard/state/pt-host2/x", "/packyard/nodes/pt-host2", "/packyard/usage/pt-host2",
                "/packyard/jobs/secret", "/packyard/instances/secret/x"):
        r = etcdctl(cluster, "agent-pt-host1", "put", key, "forged")
        assert r.returncode != 0 and "permission denied" in r.stderr, (key, r.stderr)
    r = etcdctl(cluster, "agent-pt-host1", "get", "/packyard/jobs/", "--prefix")
    assert r.returncode != 0 and "permission denied" in r.stderr   # the job specs (their env) too


def test_ctls_certificate_reads_nothing_in_etcd(cluster, running):
    for stem in ("ctl", "agent"):      # nor the generic agent pair `ctl certs init` still writes
        r = etcdctl(cluster, stem, "get", "/packyard/", "--prefix", "--keys-only")
        assert r.returncode != 0 and "secret" not in r.stdout, (stem, r.stdout)
        assert "permission denied" in r.stderr or "user name not found" in r.stderr, r.stderr
