"""`packyard-scheduler`: the control plane. With no --etcd it starts an embedded single-member etcd
under its state dir, so one command runs a working cluster."""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

import click
import grpc

from packyard import config, tls
from packyard.etcd import Etcd
from packyard.flagtypes import POSITIVE_SECONDS
from packyard.heap import HeapKeeper
from packyard.hostport import HOST_PORT, check_etcd, parse_host_port
from packyard.v1 import scheduler_pb2_grpc
from scheduler.agents import AgentClients
from scheduler.caps import Caps
from scheduler.controller import Controller, ControllerConfig
from scheduler.embedded_etcd import EtcdServer
from scheduler.http import serve_http
from scheduler.leader import Leadership
from scheduler.metrics import GC_SECONDS
from scheduler.profiles import LearnerConfig
from scheduler.reconciler import Config as ReconcileConfig
from scheduler.service import SchedulerService
from scheduler.unavailable import EtcdUnavailableToStatus

log = logging.getLogger("packyard.scheduler")


async def serve(etcd_url: str, listen: str, metrics: str | None, confirm_timeout: float,
                ready_file: Path | None = None, profile_min_samples: int = 3,
                identity: str = "", leader_ttl: int = 3, tls_identity: tls.Identity | None = None,
                allow_privileged: bool = False, purge_stopped_after: float = 86400.0,
                caps: Caps | None = None) -> None:
    etcd = Etcd(etcd_url, identity=tls_identity)
    await etcd.connect()
    controller = Controller(etcd, AgentClients(identity=tls_identity), ControllerConfig(
        reconcile=ReconcileConfig(confirm_timeout=confirm_timeout),
        learner=LearnerConfig(min_samples=profile_min_samples), purge_stopped_after=purge_stopped_after,
        caps=caps or Caps()))
    # every replica campaigns; only the leader places, all serve the API from their caches
    leadership = Leadership(etcd, identity or f"{socket.gethostname()}/{listen}", ttl=leader_ttl)
    controller.follow(leadership)
    heap = HeapKeeper(observe=lambda gen, seconds: GC_SECONDS.labels(str(gen)).observe(seconds))
    heap.start()
    await controller.start()
    leadership.start()
    server = grpc.aio.server(interceptors=[*tls.server_interceptors(tls_identity), EtcdUnavailableToStatus()])
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerService(controller, allow_privileged), server)
    tls.secure_server_port(server, listen, tls_identity)
    await server.start()
    http = None
    if metrics:
        host, port = parse_host_port(metrics)     # checked by its HOST_PORT type
        http = serve_http(controller, host, port)
    log.info("scheduler listening on %s (etcd %s)", listen, etcd_url)
    if ready_file:
        ready_file.write_text(listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("scheduler stopping")
    await leadership.resign()      # the next replica takes over now, not after the lease TTL
    await server.stop(grace=2)
    if http:
        http.shutdown()
    await controller.stop()
    await heap.stop(exiting=True)
    await controller.agents.close()
    await etcd.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--etcd", "etcd_url", envvar="PACKYARD_ETCD", callback=check_etcd, default=None,
              help="etcd client URL(s). Without it an embedded etcd is started under --state-dir.")
@click.option("--listen", type=HOST_PORT, default="127.0.0.1:7070", show_default=True, help="gRPC API address.")
@click.option("--metrics", type=HOST_PORT, default=None,
              help="HOST:PORT for Prometheus: /metrics, and /sd/agents (http_sd_configs) to find every agent.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=Path("/var/lib/packyard/scheduler"),
              show_default=True, help="Where the embedded etcd keeps its data.")
@click.option("--embedded-etcd-listen", type=HOST_PORT, default="127.0.0.1:2379", show_default=True,
              help="Client address of the embedded etcd (agents connect here).")
@click.option("--confirm-timeout", type=POSITIVE_SECONDS, default=15.0, show_default=True,
              help="Seconds an agent may take to confirm an instance before it is placed again.")
@click.option("--profile-min-samples", type=click.IntRange(1), default=3, show_default=True,
              help="Instances of a size class measured before its learned overhead is used.")
@click.option("--id", "identity", default="",
              help="This replica's name in the leader election. Default: HOSTNAME/LISTEN.")
@click.option("--allow-privileged", is_flag=True,
              help="Accept jobs asking for privileged containers, the host's network, "
                   "seccomp: unconfined or userns: host (refused otherwise; the agents check again).")
@click.option("--leader-ttl", type=click.IntRange(1, 60), default=3, show_default=True,
              help="Seconds a dead leader keeps leadership before another replica takes over.")
@click.option("--purge-stopped-after", type=click.FloatRange(0), default=86400.0, show_default=True,
              help="Seconds after which a stopped job whose instances have all ended is forgotten "
                   "(its records leave etcd); 0: only jobs stopped with --purge.")
@click.option("--max-job-instances", type=click.IntRange(1), default=Caps.per_job, show_default=True,
              help="Instances one job may ask for in all (its groups' counts summed); a submit over it is refused.")
@click.option("--max-cluster-instances", type=click.IntRange(1), default=Caps.per_cluster, show_default=True,
              help="Instances all running jobs may ask for together; a submit that would pass it is refused.")
@tls.click_option("scheduler")
@config.click_option()
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--log-level", default="info", show_default=True)
def main(etcd_url, listen, metrics, state_dir, embedded_etcd_listen, confirm_timeout,
         profile_min_samples, allow_privileged, identity, leader_ttl, purge_stopped_after, max_job_instances,
         max_cluster_instances, tls_identity, ready_file, log_level):
    """Run the packyard scheduler."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    embedded = None
    if not etcd_url:
        host, port = parse_host_port(embedded_etcd_listen)
        # with --tls, etcd too wants a certificate of the cluster's CA from every client
        embedded = EtcdServer(state_dir, client_host=host, client_port=port, tie_to_parent=True,
                              tls_dir=tls_identity.directory if tls_identity else None).start()
        etcd_url = embedded.endpoint
        log.info("embedded etcd at %s (data in %s)", etcd_url, state_dir)
        if tls_identity and not (tls_identity.directory / "root.crt").exists():
            log.warning("embedded etcd: no root.crt in %s, so its authentication stays off (every "
                        "certificate of the CA may write any key); run `ctl certs grant`", tls_identity.directory)
    try:
        asyncio.run(serve(etcd_url, listen, metrics, confirm_timeout, ready_file, profile_min_samples,
                          identity, leader_ttl, tls_identity=tls_identity,
                          allow_privileged=allow_privileged, purge_stopped_after=purge_stopped_after,
                          caps=Caps(max_job_instances, max_cluster_instances)))
    finally:
        if embedded:
            embedded.stop()


if __name__ == "__main__":
    main()
