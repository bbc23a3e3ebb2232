"""The etcd keyspace. Each key has exactly one kind of writer, which is what lets issue 6 give the
agents credentials for their own node's keys only:

  /packyard/nodes/<node>               agent      node record, bound to the agent's lease
  /packyard/state/<node>/<instance>    agent      what the agent observes an instance doing
  /packyard/usage/<node>               agent      measured usage summary, bound to the lease
  /packyard/jobs/<job>                 scheduler  job record (spec, version, desired state)
  /packyard/instances/<job>/<instance> scheduler  desired instance: group, node, reservation
  /packyard/profiles/<kind>            scheduler  overhead profile learned from measurements
  /packyard/deployments/<job>          scheduler  the rollout of the job's latest changed version
  /packyard/versions/<job>/<version>   scheduler  a submitted version: spec, stable flag (history)
  /packyard/leader                     scheduler  the leading replica's identity, under its lease
"""
from __future__ import annotations

ROOT = "/packyard/"
NODES = ROOT + "nodes/"
STATE = ROOT + "state/"
JOBS = ROOT + "jobs/"
INSTANCES = ROOT + "instances/"
USAGE = ROOT + "usage/"
PROFILES = ROOT + "profiles/"
DEPLOYMENTS = ROOT + "deployments/"
VERSIONS = ROOT + "versions/"
LEADER = ROOT + "leader"


def usage(node_name: str) -> str:
    return USAGE + node_name


def profile(kind: str) -> str:
    return PROFILES + kind


def node(name: str) -> str:
    return NODES + name


def state(node_name: str, instance_id: str) -> str:
    return f"{STATE}{node_name}/{instance_id}"


def state_prefix(node_name: str) -> str:
    return f"{STATE}{node_name}/"


def job(name: str) -> str:
    return JOBS + name


def deployment(job_name: str) -> str:
    return DEPLOYMENTS + job_name


def version(job_name: str, number: int) -> str:
    # zero-padded: a prefix listing comes back in version order
    return f"{VERSIONS}{job_name}/{number:010d}"


def instance(job_name: str, instance_id: str) -> str:
    return f"{INSTANCES}{job_name}/{instance_id}"


def instances_of(job_name: str) -> str:
    return f"{INSTANCES}{job_name}/"


def last(key: str | bytes) -> str:
    """The last path element of a key: the node, job or instance name."""
    if isinstance(key, bytes):
        key = key.decode()
    return key.rsplit("/", 1)[-1]


def instance_job(instance_id: str) -> str:
    """Instance ids are `<job>.<group>.<index>-<suffix>`; job and group are DNS labels (no dots)."""
    return instance_id.split(".", 1)[0]
