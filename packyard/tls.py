"""Mutual TLS for every gRPC port: a cluster CA, one certificate per role, and the gRPC credentials
and role checks built from them.

`ctl certs init DIR` writes DIR/ca.{crt,key} and DIR/<role>.{crt,key} for the roles below; every
program started with `--tls DIR` reads only ca.crt and its own role's pair, so a host need only get
those three files. Peers are verified by role name, not by address: each certificate carries its role
as CN and DNS SAN (`packyard-agent`), and clients dial with `grpc.ssl_target_name_override` set to the
role they expect, because agents have as many addresses as there are hosts.

Identities bound to a node (issue 15, the Kubernetes Node authorizer model): `ctl certs issue DIR
agent NODE` writes DIR/agent-NODE.{crt,key}, CN `packyard-agent:NODE`, DNS SAN `NODE.packyard-agent`.
An agent runs only with its node's pair; the scheduler dials node NODE expecting that name, so one
host's certificate cannot answer for another; and etcd (etcd_auth.py) lets that CN write only NODE's
keys. `root` (CN root) is etcd's administrator, used only to set up etcd's users and roles: keep it
where `ctl certs grant` runs, off the hosts. `ctl certs issue DIR etcd MEMBER --ip A` gives an etcd
member a pair naming its address, for TLS between members (etcd checks the peer's IP SAN).
"""
from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

# cryptography (~9 MiB resident) is imported by the functions that parse or write certificates, so
# a program started without --tls never loads it (the agent's memory budget, issue 5)
if TYPE_CHECKING:
    from cryptography import x509

# role -> the name in its certificate (CN and DNS SAN) and what it may do in a TLS handshake
ROLES = {"scheduler": "packyard-scheduler", "agent": "packyard-agent", "ctl": "packyard-ctl",
         "etcd": "packyard-etcd", "root": "root"}
LOOPBACK = "127.0.0.1"     # in init's etcd.crt: members of a local cluster talk TLS on it


def usages(role: str) -> list[x509.ObjectIdentifier]:
    """The extended key usages of ROLE's certificate."""
    from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
    # the scheduler serves ctl and dials agents and etcd; agents serve and dial etcd; ctl only
    # dials; etcd serves (and its members dial each other)
    return {"scheduler": [EKU.SERVER_AUTH, EKU.CLIENT_AUTH], "agent": [EKU.SERVER_AUTH, EKU.CLIENT_AUTH],
            "ctl": [EKU.CLIENT_AUTH], "etcd": [EKU.SERVER_AUTH, EKU.CLIENT_AUTH], "root": [EKU.CLIENT_AUTH]}[role]
# which client roles each server role answers: only the scheduler may start or stop workloads
ALLOWED_CLIENTS = {"scheduler": {"ctl", "scheduler"}, "agent": {"scheduler"}}


class TLSError(ValueError):
    """A TLS directory that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Identity:
    """One role's view of a TLS directory: the cluster CA and the role's own key pair (PEM bytes)."""
    role: str
    ca: bytes
    cert: bytes
    key: bytes
    directory: Path | None = None     # where they were read (the embedded etcd serves from it)
    node: str | None = None           # an agent's: the node its certificate names


# --- writing a directory -----------------------------------------------------------------------
def init(directory: Path, days: int = 365, force: bool = False) -> list[Path]:
    """A new cluster CA and a certificate for every role in DIRECTORY; the files written.
    An existing CA is kept unless force: replacing it locks out every host that has the old one.
    A directory whose CA lacks some roles' pairs (made before a role existed, e.g. etcd's) gets
    those, signed by its CA; one that has them all is refused without force."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TLSError(f"{directory} exists and is not a directory")
    if days < 1:
        raise TLSError(f"days: {days} is not a positive number of days")
    has_ca = (directory / "ca.crt").exists() or (directory / "ca.key").exists()
    missing = [r for r in ROLES if not (directory / f"{r}.crt").exists() or not (directory / f"{r}.key").exists()]
    if has_ca and not force and not missing:
        raise TLSError(f"{directory} already holds a cluster CA (ca.crt); use --force to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "packyard cluster CA")])
    if has_ca and not force:    # complete it: the missing roles, under the CA every host trusts
        ca = _parse_cert(directory / "ca.crt", _read(directory / "ca.crt"))
        ca_key = serialization.load_pem_private_key(_read(directory / "ca.key"), password=None)
        ca_name, written, roles = ca.subject, [], missing
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), now, days)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                  critical=True)
                   .sign(ca_key, hashes.SHA256()))
        written, roles = _write_pair(directory, "ca", ca_cert, ca_key), list(ROLES)
    for role in roles:
        ips = (LOOPBACK,) if role == "etcd" else ()
        written += _issue_pair(directory, role, ROLES[role], [ROLES[role]], ips, role, ca_name, ca_key, days)
    return written


def issue(directory: Path, role: str, name: str, days: int = 365, ips: tuple[str, ...] = ()) -> list[Path]:
    """A pair for one node's agent (`agent NODE`) or one etcd member (`etcd MEMBER`, `ips`: the
    addresses its peers and clients dial), signed by DIRECTORY's CA; the files written."""
    import ipaddress

    from cryptography.hazmat.primitives import serialization

    from packyard.quantity import DNS_LABEL
    directory = Path(directory)
    if role not in ("agent", "etcd"):
        raise TLSError(f"role: certificates are issued per node for 'agent' and per member for 'etcd', not '{role}'")
    if not DNS_LABEL.match(name):
        raise TLSError(f"name: '{name}' is not a DNS label (lowercase letters, digits, '-')")
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise TLSError(f"ip: '{ip}' is not an IP address") from None
    if days < 1:
        raise TLSError(f"days: {days} is not a positive number of days")
    ca = _parse_cert(directory / "ca.crt", _read(directory / "ca.crt"))
    ca_key = serialization.load_pem_private_key(_read(directory / "ca.key"), password=None)
    if role == "agent":
        return _issue_pair(directory, f"agent-{name}", agent_common_name(name), [agent_server_name(name)],
                           tuple(ips), "agent", ca.subject, ca_key, days)
    return _issue_pair(directory, f"etcd-{name}", ROLES["etcd"], [ROLES["etcd"]], (LOOPBACK, *ips),
                       "etcd", ca.subject, ca_key, days)


def _issue_pair(directory: Path, stem: str, common_name: str, dns: list[str], ips: tuple[str, ...],
                role: str, ca_name, ca_key, days: int) -> list[Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    now = datetime.datetime.now(datetime.UTC)
    cert = (_builder(subject, ca_name, key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages(role)), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _write_pair(directory, stem, cert, key)


def agent_common_name(node: str) -> str:
    """The CN of NODE's agent certificate, and its user name in etcd."""
    return f"{ROLES['agent']}:{node}"


def agent_server_name(node: str) -> str:
    """The DNS name the scheduler expects in NODE's agent certificate when it dials it."""
    return f"{node}.{ROLES['agent']}"


def issued_nodes(directory: Path) -> list[str]:
    """The nodes DIRECTORY holds an agent certificate for (agent-NODE.crt), sorted."""
    return sorted(p.name[len("agent-"):-len(".crt")] for p in Path(directory).glob("agent-*.crt"))


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: datetime.datetime,
             days: int) -> x509.CertificateBuilder:
    from cryptography import x509
    # backdated a little so a host whose clock lags the CA's by a minute still accepts it
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _write_pair(directory: Path, stem: str, cert: x509.Certificate, key) -> list[Path]:
    from cryptography.hazmat.primitives import serialization
    crt_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # created 0600, and chmod'ed again in case the file existed (--force) with wider rights
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pem)
    return [crt_path, key_path]


# --- reading a directory -----------------------------------------------------------------------
def load(directory: Path, role: str, node: str | None = None) -> Identity:
    """ROLE's identity from DIRECTORY, checked now (parsable, key matches, signed by the CA, in
    date), so a bad directory fails at startup rather than at the first handshake. `node`: an agent's
    node, whose own pair (agent-NODE) it must run with."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    if role not in ROLES:
        raise TLSError(f"unknown role '{role}' (one of {', '.join(ROLES)})")
    directory = Path(directory)
    if not directory.is_dir():
        raise TLSError(f"{directory} is not a directory (create one with `ctl certs init {directory}`)")
    stem = pair_stem(directory, role, node)
    ca_pem, cert_pem, key_pem = (_read(directory / name) for name in ("ca.crt", f"{stem}.crt", f"{stem}.key"))
    ca = _parse_cert(directory / "ca.crt", ca_pem)
    cert = _parse_cert(directory / f"{stem}.crt", cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TLSError(f"{directory / f'{stem}.key'}: not an unencrypted PEM private key ({e})") from None
    if key.public_key() != cert.public_key():
        raise TLSError(f"{directory / f'{stem}.key'} does not belong to {directory / f'{stem}.crt'}")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise TLSError(f"{directory / f'{stem}.crt'} is not signed by {directory / 'ca.crt'} "
                       "(a certificate of another cluster?)") from None
    now = datetime.datetime.now(datetime.UTC)
    for path, c in ((directory / "ca.crt", ca), (directory / f"{stem}.crt", cert)):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise TLSError(f"{path} is not valid now (valid {c.not_valid_before_utc:%Y-%m-%d} "
                           f"to {c.not_valid_after_utc:%Y-%m-%d})")
    return Identity(role=role, ca=ca_pem, cert=cert_pem, key=key_pem, directory=directory, node=node)


def pair_stem(directory: Path, role: str, node: str | None) -> str:
    """The file name (without .crt/.key) of ROLE's pair: an agent's is its node's."""
    if role != "agent" or node is None:
        return role
    if not (Path(directory) / f"agent-{node}.crt").exists():
        raise TLSError(f"{directory} has no certificate for node {node} (agent-{node}.crt): issue one with "
                       f"`ctl certs issue {directory} agent {node}`")
    return f"agent-{node}"


_CHECK = """
import sys
from packyard import tls
try:
    tls.load(sys.argv[1], sys.argv[2], sys.argv[3] or None)
except tls.TLSError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
"""


def load_isolated(directory: Path, role: str, node: str | None = None) -> Identity:
    """load(), its checks run in a child process: the same checks and messages, without
    cryptography (~9 MiB resident) in this process. For the agent: its budget is 60 MiB, and a
    deployment runs it with --tls."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _CHECK, str(directory), role, node or ""], capture_output=True,
                       text=True, timeout=120)
    if r.returncode == 2:
        raise TLSError(r.stderr.strip())
    if r.returncode != 0:
        raise TLSError(f"checking {directory} failed: {r.stderr.strip()[-500:]}")
    directory = Path(directory)
    stem = pair_stem(directory, role, node)
    ca, cert, key = (_read(directory / name) for name in ("ca.crt", f"{stem}.crt", f"{stem}.key"))
    return Identity(role=role, ca=ca, cert=cert, key=key, directory=directory, node=node)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read {path}: {e.strerror}") from None


def _parse_cert(path: Path, pem: bytes) -> x509.Certificate:
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise TLSError(f"{path}: not a PEM certificate ({e})") from None


# --- gRPC --------------------------------------------------------------------------------------
def server_credentials(identity: Identity) -> grpc.ServerCredentials:
    """Serve with the role's pair; a client must present a certificate from the cluster CA."""
    return grpc.ssl_server_credentials([(identity.key, identity.cert)], root_certificates=identity.ca,
                                       require_client_auth=True)


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=identity.ca, private_key=identity.key,
                                        certificate_chain=identity.cert)


def channel_options(server_role: str, node: str | None = None) -> list[tuple[str, str]]:
    """Verify the server by its role name, whatever address it was dialled at; an agent by the
    name of the node it is dialled as."""
    name = agent_server_name(node) if server_role == "agent" and node else ROLES[server_role]
    return [("grpc.ssl_target_name_override", name)]


# `ctl status` of a 100,000-instance job is ~8 MB: over gRPC's default 4 MiB receive limit
MESSAGE_OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]


def dial(address: str, identity: Identity | None, server_role: str, aio: bool = False, node: str | None = None):
    """A channel to a server of SERVER_ROLE (an agent: NODE's): mutual TLS with IDENTITY, or
    plaintext without one."""
    api = grpc.aio if aio else grpc
    if identity is None:
        return api.insecure_channel(address, options=MESSAGE_OPTIONS)
    return api.secure_channel(address, channel_credentials(identity),
                              options=channel_options(server_role, node) + MESSAGE_OPTIONS)


def peer_role(context) -> str | None:
    """The role of the client on the other end of a TLS call, from its certificate's CN."""
    names = (context.auth_context() or {}).get("x509_common_name") or []
    by_name = {v: k for k, v in ROLES.items()}
    # a node's agent (packyard-agent:NODE) is an agent
    return next((by_name[n.decode().split(":", 1)[0]] for n in names
                 if n.decode().split(":", 1)[0] in by_name), None)


class RoleCheck(grpc.aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) a client whose certificate is the cluster's but whose role may not
    call this server: ctl's certificate cannot start workloads on an agent directly."""

    def __init__(self, server_role: str):
        self.server_role = server_role
        self.allowed = ALLOWED_CLIENTS[server_role]

    async def _check(self, context) -> None:
        role = peer_role(context)
        if role not in self.allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{ROLES[self.server_role]} does not accept calls from "
                                f"{ROLES.get(role, 'an unknown client')} (allowed: "
                                f"{', '.join(ROLES[r] for r in sorted(self.allowed))})")

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                await self._check(context)
                return await inner(request, context)
            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request, context):
                await self._check(context)
                result = inner_stream(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:   # a servicer that writes through context.write
                    await result
            return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer,
                                                        handler.response_serializer)
        # no client-streaming RPC exists in packyard.v1; refuse rather than pass one unchecked
        raise NotImplementedError(f"RoleCheck cannot guard {handler_call_details.method}")


def secure_server_port(server: grpc.aio.Server, address: str, identity: Identity | None) -> int:
    """Bind ADDRESS with mutual TLS when an identity is given (plaintext otherwise); the port bound."""
    if identity is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(identity))


def click_option(role: str):
    """`--tls DIR` (env PACKYARD_TLS) for the program of ROLE; the parameter's value is the loaded
    Identity, or None for plaintext. A bad directory is a usage error naming --tls. The agent's is
    the directory: its pair is its node's, and --node may come later (load_agent)."""
    import click

    def load_param(ctx, param, value):
        if value is None:
            return None
        if role == "agent":
            return Path(value)
        try:
            return load(Path(value), role)
        except TLSError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    return click.option("--tls", "tls_identity", envvar="PACKYARD_TLS", default=None, metavar="DIR",
                        callback=load_param,
                        help="Mutual TLS with the certificates in DIR (`ctl certs init DIR`; "
                             "env PACKYARD_TLS).")


def load_agent(directory: Path | None, node: str) -> Identity | None:
    """NODE's agent identity from --tls DIR (None: plaintext), checked in a child process so the
    agent keeps cryptography out of its memory (see load_isolated); a usage error naming --tls."""
    import click
    if directory is None:
        return None
    try:
        return load_isolated(directory, "agent", node)
    except TLSError as e:
        raise click.BadParameter(str(e), param_hint="'--tls'") from None


def server_interceptors(identity: Identity | None) -> list[grpc.aio.ServerInterceptor]:
    return [RoleCheck(identity.role)] if identity is not None and identity.role in ALLOWED_CLIENTS else []
