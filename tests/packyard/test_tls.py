"""Cluster certificates: what `ctl certs init` writes, what `--tls DIR` accepts, and the handshake and
role checks on a real in-process gRPC server (loopback, ephemeral port)."""
from __future__ import annotations

import stat

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packyard import tls
from packyard.v1 import agent_pb2, agent_pb2_grpc, common_pb2


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A second cluster: same role names, another CA."""
    d = tmp_path_factory.mktemp("foreign")
    tls.init(d)
    return d


@pytest.fixture(scope="module", autouse=True)
def written(certs):
    return tls.init(certs)


def test_init_writes_a_ca_and_one_pair_per_role_with_private_keys_0600(certs, written):
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{ext}" for stem in ("ca", *tls.ROLES) for ext in ("crt", "key"))
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.suffix == ".key":
            assert mode == 0o600, path
        else:
            assert mode & 0o077 != 0o077 and mode & 0o400, path   # readable, not a key


@pytest.mark.parametrize("role", sorted(tls.ROLES))
def test_each_certificate_names_its_role_and_is_signed_by_the_ca(certs, role):
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((certs / f"{role}.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == tls.ROLES[role]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [tls.ROLES[role]]
    usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == tls.usages(role)
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages or role in ("ctl", "root")


def test_init_refuses_to_replace_a_ca_unless_forced(tmp_path):
    tls.init(tmp_path)
    before = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(tls.TLSError, match="already holds a cluster CA.*--force"):
        tls.init(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == before
    tls.init(tmp_path, force=True)
    assert (tmp_path / "ca.crt").read_bytes() != before
    assert tls.load(tmp_path, "agent").role == "agent"


def test_init_completes_a_directory_made_before_a_role_existed_under_the_same_ca(tmp_path):
    tls.init(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    agent = (tmp_path / "agent.crt").read_bytes()
    (tmp_path / "etcd.crt").unlink()
    (tmp_path / "etcd.key").unlink()
    written = tls.init(tmp_path)
    assert sorted(p.name for p in written) == ["etcd.crt", "etcd.key"]
    assert (tmp_path / "ca.crt").read_bytes() == ca and (tmp_path / "agent.crt").read_bytes() == agent
    assert tls.load(tmp_path, "etcd").role == "etcd"      # signed by the CA it already had
    with pytest.raises(tls.TLSError, match="already holds a cluster CA"):
        tls.init(tmp_path)


def test_force_narrows_a_key_file_that_had_wider_rights(tmp_path):
    tls.init(tmp_path)
    (tmp_path / "ctl.key").chmod(0o644)
    tls.init(tmp_path, force=True)
    assert stat.S_IMODE((tmp_path / "ctl.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("days", [0, -3])
def test_init_refuses_a_validity_that_is_not_positive(tmp_path, days):
    with pytest.raises(tls.TLSError, match="days"):
        tls.init(tmp_path / "d", days=days)


def test_init_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(tls.TLSError, match="not a directory"):
        tls.init(tmp_path / "f")


def test_load_reads_only_the_ca_and_the_roles_own_pair(certs, tmp_path):
    for name in ("ca.crt", "agent.crt", "agent.key"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    identity = tls.load(tmp_path, "agent")
    assert identity.cert == (certs / "agent.crt").read_bytes()
    with pytest.raises(tls.TLSError, match=r"cannot read .*scheduler\.crt"):
        tls.load(tmp_path, "scheduler")


def copy_dir(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("breakage, message", [
    (lambda d, f: (d / "ctl.crt").write_text("garbage"), r"ctl\.crt: not a PEM certificate"),
    (lambda d, f: (d / "ctl.key").write_text("garbage"), r"ctl\.key: not an unencrypted PEM private key"),
    (lambda d, f: (d / "ctl.key").write_bytes((d / "agent.key").read_bytes()), r"ctl\.key does not belong"),
    (lambda d, f: (d / "ca.crt").write_bytes((f / "ca.crt").read_bytes()), r"ctl\.crt is not signed by"),
    (lambda d, f: (d / "ctl.crt").unlink(), r"cannot read .*ctl\.crt"),
], ids=["cert-not-pem", "key-not-pem", "key-of-another-role", "other-ca", "cert-missing"])
def test_load_names_the_file_and_the_reason(certs, foreign, tmp_path, breakage, message):
    d = copy_dir(certs, tmp_path / "d")
    breakage(d, foreign)
    with pytest.raises(tls.TLSError, match=message):
        tls.load(d, "ctl")


def test_load_refuses_a_missing_directory_and_an_unknown_role(certs, tmp_path):
    with pytest.raises(tls.TLSError, match="not a directory.*ctl certs init"):
        tls.load(tmp_path / "nope", "ctl")
    with pytest.raises(tls.TLSError, match="unknown role 'registry'"):
        tls.load(certs, "registry")


# --- the handshake and the role check, on a real gRPC server ------------------------------------------
class Inventory(agent_pb2_grpc.AgentServicer):
    async def Inventory(self, request, context):
        return agent_pb2.InventoryResponse(node="n1")

    async def Logs(self, request, context):
        yield common_pb2.LogChunk(data=b"hello")


async def serve_agent(identity):
    server = grpc.aio.server(interceptors=tls.server_interceptors(identity))
    agent_pb2_grpc.add_AgentServicer_to_server(Inventory(), server)
    port = tls.secure_server_port(server, "127.0.0.1:0", identity)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def agent_port(certs):
    server, address = await serve_agent(tls.load(certs, "agent"))
    yield address
    await server.stop(grace=None)


async def inventory(address, identity):
    async with tls.dial(address, identity, "agent", aio=True) as channel:
        return await agent_pb2_grpc.AgentStub(channel).Inventory(agent_pb2.InventoryRequest(), timeout=5)


async def test_the_agent_answers_the_schedulers_certificate(certs, agent_port):
    reply = await inventory(agent_port, tls.load(certs, "scheduler"))
    assert reply.node == "n1"


async def test_a_streaming_call_is_checked_and_served_too(certs, agent_port):
    async with tls.dial(agent_port, tls.load(certs, "scheduler"), "agent", aio=True) as channel:
        call = agent_pb2_grpc.AgentStub(channel).Logs(common_pb2.LogsRequest(instance_id="x"), timeout=5)
        assert [c.data async for c in call] == [b"hello"]
    async with tls.dial(agent_port, tls.load(certs, "ctl"), "agent", aio=True) as channel:
        call = agent_pb2_grpc.AgentStub(channel).Logs(common_pb2.LogsRequest(instance_id="x"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            [c async for c in call]
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_agent_refuses_ctls_certificate_by_role(certs, agent_port):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await inventory(agent_port, tls.load(certs, "ctl"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "packyard-agent does not accept calls from packyard-ctl" in e.value.details()


async def test_the_agent_refuses_plaintext(agent_port):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await inventory(agent_port, None)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def impostor(certs, foreign) -> tls.Identity:
    """A client that trusts our CA (so it would accept the server) but presents another CA's
    scheduler certificate: only the server's check of client certificates can refuse it."""
    theirs = tls.load(foreign, "scheduler")
    ours = (certs / "ca.crt").read_bytes()
    return tls.Identity(role="scheduler", ca=ours, cert=theirs.cert, key=theirs.key)


async def test_the_agent_refuses_a_certificate_of_another_ca(certs, foreign, agent_port):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await inventory(agent_port, impostor(certs, foreign))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_agent_refuses_a_tls_client_without_a_certificate(certs, agent_port):
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(agent_port, creds, options=tls.channel_options("agent")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent_pb2_grpc.AgentStub(channel).Inventory(agent_pb2.InventoryRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_agents_certificate_cannot_call_another_agent(certs, agent_port):
    """It is a server-only certificate: the handshake itself fails, before any role check."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await inventory(agent_port, tls.load(certs, "agent"))
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)


def test_load_isolated_checks_as_load_does_without_loading_cryptography_here(certs, tmp_path):
    """The agent's way (--tls): the same identity, the same refusal messages, and cryptography
    never imported into the calling process."""
    import subprocess
    import sys
    assert tls.load_isolated(certs, "agent") == tls.load(certs, "agent")
    tls.init(tmp_path / "other")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("ca.crt", "agent.crt", "agent.key"):
        src = (tmp_path / "other" if name == "ca.crt" else certs) / name
        (mixed / name).write_bytes(src.read_bytes())
    with pytest.raises(tls.TLSError, match="is not signed by .*another cluster") as isolated:
        tls.load_isolated(mixed, "agent")
    with pytest.raises(tls.TLSError) as direct:
        tls.load(mixed, "agent")
    assert str(isolated.value) == str(direct.value)
    code = ("import sys; from packyard import tls; tls.load_isolated(sys.argv[1], 'agent'); "
            "print('cryptography' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(certs)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# --- identities bound to a node (issue 15) ------------------------------------------------------------
@pytest.fixture(scope="module")
def nodes(certs):
    for node in ("n1", "n2"):
        tls.issue(certs, "agent", node)
    return certs


def test_issue_names_the_node_in_cn_and_san_and_is_signed_by_the_ca(nodes):
    ca = x509.load_pem_x509_certificate((nodes / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((nodes / "agent-n1.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "packyard-agent:n1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1.packyard-agent"]
    assert stat.S_IMODE((nodes / "agent-n1.key").stat().st_mode) == 0o600
    assert tls.issued_nodes(nodes) == ["n1", "n2"]
    assert tls.load(nodes, "agent", node="n2").cert == (nodes / "agent-n2.crt").read_bytes()


def test_issue_refuses_bad_names_roles_and_addresses(nodes):
    with pytest.raises(tls.TLSError, match="name: 'N_1' is not a DNS label"):
        tls.issue(nodes, "agent", "N_1")
    with pytest.raises(tls.TLSError, match="role: .* not 'ctl'"):
        tls.issue(nodes, "ctl", "n1")
    with pytest.raises(tls.TLSError, match="ip: '10.0.0' is not an IP address"):
        tls.issue(nodes, "etcd", "m1", ips=("10.0.0",))


def test_an_etcd_members_certificate_names_its_addresses(nodes):
    import ipaddress
    tls.issue(nodes, "etcd", "m1", ips=("10.213.9.1",))
    cert = x509.load_pem_x509_certificate((nodes / "etcd-m1.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                      ipaddress.ip_address("10.213.9.1")]


def test_an_agent_runs_only_with_its_nodes_pair(nodes):
    with pytest.raises(tls.TLSError, match=r"no certificate for node n9 \(agent-n9\.crt\).*ctl certs issue .* agent n9"):
        tls.load_isolated(nodes, "agent", node="n9")
    assert tls.load_isolated(nodes, "agent", node="n1") == tls.load(nodes, "agent", node="n1")


@pytest.fixture
async def node_port(nodes):
    """The agent of node n1, with n1's certificate."""
    server, address = await serve_agent(tls.load(nodes, "agent", node="n1"))
    yield address
    await server.stop(grace=None)


async def test_the_scheduler_reaches_a_node_only_as_the_node_its_certificate_names(nodes, node_port):
    scheduler = tls.load(nodes, "scheduler")
    async with tls.dial(node_port, scheduler, "agent", aio=True, node="n1") as channel:
        assert (await agent_pb2_grpc.AgentStub(channel).Inventory(agent_pb2.InventoryRequest(), timeout=5)).node == "n1"
    # n1's host registered under n2's name (its own address): the handshake fails
    async with tls.dial(node_port, scheduler, "agent", aio=True, node="n2") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent_pb2_grpc.AgentStub(channel).Inventory(agent_pb2.InventoryRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
