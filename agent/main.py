"""`packyard-agent`: runs workloads on one host, registers it in etcd, reports what it runs."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from pathlib import Path

import click
import grpc
import prometheus_client

from agent import drivercheck, fingerprint, memory
from agent.drivers.paths import (
    DEFAULT_ALLOWED_DIRS,
    DEFAULT_PROTECTED_DIRS,
    STATE_MARKER,
    check_allowed_dirs,
    parse_allowed_dirs,
)
from agent.imagereport import ImageReport
from agent.manager import InstanceManager
from agent.registration import Registration
from agent.reporter import Reporter
from agent.server import AgentService
from agent.usage import UsageCollector
from packyard import config, tls
from packyard.etcd import Etcd
from packyard.flagtypes import POSITIVE_SECONDS, Seconds
from packyard.hostport import HOST_PORT, check_etcd, parse_host_port
from packyard.httpserve import serve_metrics
from packyard.records import NodeRecord
from packyard.v1 import agent_pb2_grpc

log = logging.getLogger("packyard.agent")


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (64 MiB reserved, a few MiB
    resident each); the agent's gRPC and worker threads need no such parallelism."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def default_subnet(node: str) -> str:
    """A /24 derived from the node name, so agents side by side don't collide by default."""
    h = int(hashlib.sha1(node.encode()).hexdigest(), 16)
    return f"10.{214 + h % 16}.{(h >> 8) % 256}.0/24"


def make_drivers(names: list[str], node: str, state_dir: Path, subnet: str, bridge: str | None,
                 libvirt_uri: str = "qemu:///system", allowed_dirs: tuple[Path, ...] | None = None,
                 allow_privileged: bool = False, seccomp_profile: Path | None = None,
                 userns_remap: str = "packyard", images=None, log_cap=None):
    """Driver instances by kind, and attributes for the kinds that could not be set up.
    `allowed_dirs`: where images, kernels and disks may be; `allow_privileged`, `seccomp_profile`,
    `userns_remap`: see --allow-privileged, --seccomp-profile, --userns-remap; `log_cap`: each
    container's log rotation (--log-max-size, --log-max-files; None: their defaults)."""
    drivers, attrs = {}, {}
    for name in names:
        try:
            if name == "container":
                from agent.drivers.container import ContainerDriver
                drivers["container"] = ContainerDriver(node=node, state_dir=state_dir,
                                                       subnet=subnet, bridge=bridge, allowed_dirs=allowed_dirs,
                                                       allow_privileged=allow_privileged,
                                                       seccomp_profile=seccomp_profile, userns=userns_remap,
                                                       images=images(state_dir) if images else None,
                                                       log_cap=log_cap)
            elif name == "vm":
                from agent.drivers.vm import VMDriver
                drivers["vm"] = VMDriver(node=node, state_dir=state_dir, subnet=subnet,
                                         bridge=bridge, uri=libvirt_uri, allowed_dirs=allowed_dirs)
            elif name.startswith("fake"):
                from agent.drivers.fake import FakeDriver
                kind = name.split(":", 1)[1] if ":" in name else "container"
                drivers[kind] = FakeDriver(kind, state_dir)
            else:
                attrs[f"driver.{name}"] = "unavailable: unknown driver"
        except Exception as e:  # a missing runc or libvirt is a node attribute, not a crash
            log.warning("driver %s unavailable: %s", name, e)
            attrs[f"driver.{name.split(':')[0]}"] = f"unavailable: {e}"
    return drivers, attrs


def _image_store(opts: dict):
    """The registry image store's factory (given the driver's state dir), from the agent's flags."""
    from agent.images.store import ImageStore

    def make(state_dir: Path) -> ImageStore:
        return ImageStore(state_dir / "images" / "registry", opts["registry_config"],
                          cap_bytes=opts["image_cache_size"], stall_seconds=opts["pull_progress_deadline"])
    return make


async def serve(opts: dict) -> None:
    node = opts["node"]
    state_dir: Path = opts["state_dir"]
    state_dir.mkdir(parents=True, exist_ok=True)
    # tells every agent of this host that no job's image may come from here (drivers/paths.py)
    (state_dir / STATE_MARKER).touch()
    etcd = Etcd(opts["etcd"], identity=opts["tls_identity"])
    await etcd.connect()
    drivers, attributes = make_drivers(opts["drivers"], node, state_dir, opts["subnet"], opts["bridge"],
                                       opts["libvirt_uri"], opts["allowed_dirs"], opts["allow_privileged"],
                                       opts["seccomp_profile"], opts["userns_remap"], _image_store(opts),
                                       opts["log_cap"])
    attributes.update(await drivercheck.fingerprints(drivers))
    attributes.update(fingerprint.host_attributes())
    if opts["metrics"]:
        # published so the scheduler's /sd/agents can point Prometheus here
        attributes["metrics.address"] = opts["metrics_advertise"] or opts["metrics"]
    reporter = Reporter(etcd, node)
    manager = InstanceManager(node, state_dir, drivers, reporter)
    if "container" in drivers:
        drivers["container"].progress = manager.progress      # "pulling 12/48 MiB" while starting
    adopted, dead = await manager.recover()
    if adopted or dead:
        log.info("reattached to %d instances; %d ended while the agent was down", len(adopted), len(dead))

    server = grpc.aio.server(interceptors=tls.server_interceptors(opts["tls_identity"]))
    registration: Registration | None = None
    agent_pb2_grpc.add_AgentServicer_to_server(
        AgentService(node, manager, epoch=lambda: registration.lease_id if registration else None), server)
    port = tls.secure_server_port(server, opts["listen"], opts["tls_identity"])
    await server.start()
    host = opts["listen"].rpartition(":")[0]
    address = opts["advertise"] or f"{host}:{port}"
    images = getattr(drivers.get("container"), "images", None)    # the fake driver has no store
    record = NodeRecord(name=node, address=address, capacity=vars(opts["capacity"]),
                        labels=opts["labels"], attributes=attributes, started_at=time.time(),
                        images=images.summary() if images is not None else [])
    registration = Registration(etcd, record, ttl=opts["lease_ttl"])
    await registration.start()
    image_report = ImageReport(registration)
    report_task = asyncio.get_running_loop().create_task(image_report.run())
    if images is not None:
        images.on_change = image_report.changed       # pulls and collections: placement's locality
    collector = UsageCollector(etcd, node, manager, interval=opts["usage_interval"])
    prometheus_client.REGISTRY.register(collector)
    usage_task = asyncio.get_running_loop().create_task(collector.run(lambda: registration.lease_id))
    recheck_task = asyncio.get_running_loop().create_task(
        drivercheck.recheck(drivers, registration, opts["driver_check_interval"]))
    # the logs of instances whose job was purged go with their records
    sweep_task = asyncio.get_running_loop().create_task(manager.sweep_logs_every(opts["log_sweep_interval"]))
    log.info("agent %s serving on %s, drivers: %s", node, address, ", ".join(drivers) or "none")
    if opts["ready_file"]:
        opts["ready_file"].write_text(address)
    memory.release_free_heap(collect=True)     # start-up's garbage (imports, the VM probe)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("agent %s stopping; instances keep running", node)
    usage_task.cancel()
    recheck_task.cancel()
    report_task.cancel()
    sweep_task.cancel()
    await registration.close()
    await server.stop(grace=1)
    await manager.shutdown()
    await reporter.close()      # states queued during an etcd outage get a last chance
    await etcd.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--etcd", required=True, envvar="PACKYARD_ETCD", callback=check_etcd,
              help="etcd client URL(s): every member, comma-separated.")
@click.option("--listen", type=HOST_PORT, default="127.0.0.1:7171", show_default=True, help="gRPC address (port 0: any).")
@click.option("--advertise", type=HOST_PORT, default=None, help="Address the scheduler should use, if not --listen.")
@click.option("--node", required=True, help="This host's node name (a DNS label).")
@click.option("--capacity", default="", help="cpu=4,memory=8Gi[,disk=..,gpu=..]; default: detected.")
@click.option("--labels", default="", help="k=v,... for constraints.")
@click.option("--metrics", type=HOST_PORT, default=None, help="HOST:PORT for Prometheus metrics.")
@click.option("--metrics-advertise", type=HOST_PORT, default=None, help="Address Prometheus should scrape, if not --metrics.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Default: /var/lib/packyard/agent/<node>.")
@click.option("--subnet", default=None, help="Container subnet (CIDR); default derived from --node.")
@click.option("--bridge", default=None, help="Bridge name; default derived from --node.")
@click.option("--drivers", default="auto", show_default=True,
              help="auto (container and vm, each used where its fingerprint passes, re-checked every "
                   "--driver-check-interval) or a comma list: container, vm, fake (or fake:vm) for tests.")
@click.option("--driver-check-interval", type=Seconds(1, open_min=False), default=30.0, show_default=True,
              help="Seconds between re-checks of the drivers' fingerprints.")
@click.option("--libvirt-uri", default="qemu:///system", show_default=True,
              help="libvirt connection of the vm driver.")
@click.option("--allowed-dirs", default=",".join(DEFAULT_ALLOWED_DIRS), show_default=True,
              help="Comma list of directories job images, kernels and disks may be in (after symlinks).")
@click.option("--allow-privileged", is_flag=True,
              help="Run containers asking for privileged mode, the host's network, seccomp: unconfined or "
                   "userns: host (refused otherwise).")
@click.option("--seccomp-profile", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Seccomp profile (Docker/Podman format) of every container; default: "
                   "/usr/share/containers/seccomp.json with Docker's rules.")
@click.option("--userns-remap", default="packyard", show_default=True,
              help="Name whose /etc/subuid and /etc/subgid range the containers' user namespace maps to.")
@click.option("--registry-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Docker config.json (auths) for registries, plus 'certs' {registry: CA file} and "
                   "'insecure' [registries]; plain HTTP is otherwise for loopback registries only.")
@click.option("--image-cache-size", default="20Gi", show_default=True,
              help="Registry images kept on this host; least recently used unused ones go beyond it.")
@click.option("--pull-progress-deadline", type=POSITIVE_SECONDS, default=30.0, show_default=True,
              help="Seconds a pull may go without receiving data before it fails.")
@click.option("--log-max-size", default="10Mi", show_default=True,
              help="A container's log rotates at this size (Ki, Mi: the units of --image-cache-size), "
                   "written by its own log process (s6-log) so the cap holds however fast it writes.")
@click.option("--log-max-files", type=int, default=5, show_default=True,
              help="Files kept per container log, the current one included: a log takes at most "
                   "--log-max-size × --log-max-files. VM consoles rotate as virtlogd.conf says.")
@click.option("--lease-ttl", type=click.IntRange(1), default=5, show_default=True,
              help="Seconds without a heartbeat before the node is declared down.")
@click.option("--usage-interval", type=POSITIVE_SECONDS, default=5.0, show_default=True,
              help="Seconds between usage measurements (etcd summary, Prometheus).")
@click.option("--simulate", type=click.IntRange(0, 99999), default=0, metavar="N",
              help="Simulate N hosts NODE-00000.. with instant fake instances (tests, benchmarks).")
@tls.click_option("agent")
@config.click_option()
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--log-sweep-interval", type=Seconds(0.1, open_min=False), default=30.0, hidden=True)
@click.option("--log-level", default="info", show_default=True)
def main(**opts):
    """Run a packyard agent on this host."""
    limit_malloc_arenas()
    logging.basicConfig(level=opts["log_level"].upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from packyard.quantity import DNS_LABEL
    if not DNS_LABEL.match(opts["node"]):
        raise click.BadParameter("must be a DNS label (lowercase letters, digits, '-')", param_hint="--node")
    if opts["simulate"] and opts["tls_identity"] is not None:
        # each node's keys in etcd are writable only with that node's certificate
        raise click.BadParameter("--simulate runs without TLS: simulated nodes have no certificates",
                                 param_hint="--tls")
    opts["tls_identity"] = tls.load_agent(opts["tls_identity"], opts["node"])
    try:
        opts["capacity"] = fingerprint.parse_capacity(opts["capacity"], fingerprint.detect_capacity())
        opts["labels"] = fingerprint.parse_labels(opts["labels"])
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        opts["allowed_dirs"] = parse_allowed_dirs(opts["allowed_dirs"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--allowed-dirs") from None
    from agent.images.registry import RegistryConfig, RegistryConfigError
    from packyard.quantity import QuantityError, parse_bytes
    try:
        opts["registry_config"] = RegistryConfig.load(opts["registry_config"])
    except RegistryConfigError as e:
        raise click.BadParameter(str(e), param_hint="--registry-config") from None
    try:
        opts["image_cache_size"] = parse_bytes(opts["image_cache_size"])
    except (QuantityError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--image-cache-size") from None
    from agent.drivers.container.logger import LogCap, LogCapError
    try:
        size = parse_bytes(opts["log_max_size"])
    except (QuantityError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="--log-max-size") from None
    try:
        LogCap(max_size=size)
    except LogCapError as e:
        raise click.BadParameter(str(e), param_hint="--log-max-size") from None
    try:
        opts["log_cap"] = LogCap(max_size=size, max_files=opts["log_max_files"])
    except LogCapError as e:
        raise click.BadParameter(str(e), param_hint="--log-max-files") from None
    opts["state_dir"] = opts["state_dir"] or Path("/var/lib/packyard/agent") / opts["node"]
    try:
        check_allowed_dirs(opts["allowed_dirs"], [opts["state_dir"], *map(Path, DEFAULT_PROTECTED_DIRS)])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--allowed-dirs") from None
    opts["subnet"] = opts["subnet"] or default_subnet(opts["node"])
    try:
        opts["drivers"] = drivercheck.driver_names(opts["drivers"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--drivers") from None
    if opts["metrics"]:
        host, port = parse_host_port(opts["metrics"])
        try:
            serve_metrics(host, port)
        except OSError as e:        # in use, or not an address of this host: one line, not a traceback
            raise click.ClickException(f"--metrics {opts['metrics']}: {e.strerror or e}") from None
    if opts["simulate"]:
        from agent import simulate
        asyncio.run(simulate.serve(opts, opts["simulate"]))
        return
    asyncio.run(serve(opts))


if __name__ == "__main__":
    main()
